# Declarations of the validator, so the dispatcher converts arguments at C level.
cimport cython


@cython.final
cdef class Limits:
    cdef readonly Py_ssize_t string_max_bytes
    cdef readonly Py_ssize_t list_max_items
    cdef readonly Py_ssize_t map_max_items


@cython.final
cdef class Validator:
    cdef tuple _specs                 # _Spec objects, declaration order
    cdef tuple _names
    cdef frozenset _declared
    cdef str _qrequest_type
    cdef Py_ssize_t _n
    cdef int _mode

    cdef object _extra_error(self, object args)
    cpdef list convert(self, object args)
