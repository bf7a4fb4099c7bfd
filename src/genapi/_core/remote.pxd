# Declarations of the remote callee, so its calls run at C level.
cimport cython

from genapi._core.callee cimport Callee
from genapi._core.reply cimport Reply
from genapi._core.rpc cimport ClientPeer, Sink
from genapi._core.select cimport NodeState, Selector


cdef class NodeLink:
    cdef readonly str address
    cdef readonly NodeState state
    cdef public ClientPeer peer
    cdef readonly object nodes              # remote.Nodes: the secret, the name, [cluster]
    cdef object _connecting

    cpdef ClientPeer connected(self)


cdef class Plan:
    cdef public int attempt
    cdef public NodeLink first
    cdef public list order                  # the first attempt's node order


cdef class RemoteCallee(Callee):
    cdef readonly object nodes
    cdef readonly str target                # the function's mfa target, as the node declared it
    cdef readonly str name
    cdef readonly Selector selector
    cdef readonly bint same_node
    cdef object _resolver
    cdef list _static
    cdef list _resolved
    cdef double _resolved_at

    cpdef list links(self)
    cdef list order(self, object request, Plan plan, Py_ssize_t* first)
    cdef double _deadline(self, double now)


@cython.no_gc  # one per call; its references (reply, peer, link, future) form no cycle that outlives it
cdef class RemoteCall(Sink):
    cdef RemoteCallee callee
    cdef object request
    cdef list args
    cdef list order                         # the nodes, tried from order[first] around the ring
    cdef Py_ssize_t first
    cdef Py_ssize_t i                       # how many were tried
    cdef Reply reply
    cdef object future
    cdef object handle
    cdef NodeLink link
    cdef ClientPeer peer
    cdef long long call_id
    cdef object last_error
    cdef int tried
    cdef bint finished
    cdef int chunks
    cdef bint started                       # a stream that sent a chunk is not moved to another node
    cdef object connecting

    cdef setup(self, RemoteCallee callee, object request, list args, list order, double deadline)
    cdef next_node(self)
    cdef next_node_at(self, double now)
    cdef _send(self, ClientPeer peer)
    cdef _credit(self)
    cdef _node_done(self, bint node_failed)
    cdef _timed_out(self)
    cdef Reply _release_reply(self)
    cdef _end(self, object value)
    cdef _end_error(self, object exc)
