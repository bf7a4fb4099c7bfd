# Declarations of the frame builders, so the reply object calls them at C level.

cpdef bytes ws_text(bytes payload)
cpdef bytes message_v2(object join_ref, object ref, str topic, str event, object payload)
cpdef bytes push_v2(object join_ref, str topic, str event, object payload)
cpdef bytes reply_v2(object join_ref, object ref, str topic, str status, object response)
cpdef bytes answer_v2(object join_ref, object ref, str topic, str event, object push, str status,
                      object response)
cpdef bytes message_v1(object join_ref, object ref, str topic, str event, object payload)
cpdef bytes push_v1(object join_ref, str topic, str event, object payload)
cpdef bytes reply_v1(object join_ref, object ref, str topic, str status, object response)
cpdef bytes answer_v1(object join_ref, object ref, str topic, str event, object push, str status,
                      object response)
cpdef bytes push_raw(bint v2, object join_ref, str topic, str event, bytes payload)
