# Stepping a coroutine by hand, for the callees that run `async def` functions inline (the
# gateway's LocalCallee, a service node's FunctionHost): declarations only, no module of its own.
from cpython.ref cimport PyObject


cdef extern from "Python.h":
    # Steps a coroutine; a return comes back as PYGEN_RETURN (0) without a StopIteration.
    int PyIter_Send(object iter, object arg, PyObject** presult) except? -1


cdef enum:
    PYGEN_RETURN = 0
    PYGEN_NEXT = 1
