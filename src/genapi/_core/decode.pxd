# Declarations of the frame decoders, so the connection calls them at C level.

cpdef tuple decode_v2(object data)
cpdef tuple decode_v1(object data)
cpdef object decode_request(object payload, object user_id, object device_id, object user_roles,
                            Py_ssize_t size, Py_ssize_t max_size, object traceparent=*)
