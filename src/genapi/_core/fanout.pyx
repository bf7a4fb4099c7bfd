# cython: language_level=3
"""A worker's relay deliveries, compiled: the seats (one connection on one topic that is a member
of relay groups) and the loop that writes each relayed message to them.

Deliveries arrive in batches (tokens of this worker's seats and the message, encoded once by the
authority) and are written on the next turn of the loop, after the answers that came with them
(a sender reads its answer before its own copy). The loop runs in C: a seat is found by its token,
its connection's join_ref read, and the frame (the message in that topic's envelope) is built once
per message for every seat sharing its envelope, not once per seat. Every connection is corked
for the whole batch, so it gets one write however many messages the batch holds.

A seat whose connection is not reading its output (the transport is over its high-water mark)
gets nothing more until it catches up: the relay's queue per member is that buffer, and what does
not fit is dropped, counted and logged."""
cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

from genapi._core.connection cimport Connection
from genapi._core.wire cimport push_raw

import asyncio

from genapi import log


@cython.final
cdef class Seat:
    """One connection on one topic, as a member of relay groups."""
    cdef readonly object seats
    cdef readonly Connection conn
    cdef readonly str topic
    cdef readonly object token
    cdef public bint placed           # an operation that seats it was sent: the authority must hear when it goes
    cdef public Py_ssize_t dropped    # deliveries dropped since it last kept up

    def __init__(self, seats, Connection conn not None, str topic, object token):
        self.seats = seats
        self.conn = conn
        self.topic = topic
        self.token = token
        self.placed = False
        self.dropped = 0

    def cancel(self):
        """The topic was left or joined again, or the connection closed (Connection._cancel)."""
        self.seats.vacate(self)


cdef class Fanout:
    """The seats of one worker by token, and their deliveries: queued by `deliver`, written by
    `flush` on the next turn of the loop."""
    cdef readonly dict by_token       # token → Seat
    cdef list _inbox                  # (tokens, payload) queued since the last flush
    cdef object _loop
    cdef public long long delivered
    cdef public long long dropped

    def __init__(self):
        self.by_token = {}
        self._inbox = []
        self._loop = None
        self.delivered = 0
        self.dropped = 0

    cpdef deliver(self, list tokens, bytes payload):
        """Queues one message for these seats: written on the next turn of the loop."""
        if not self._inbox:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)
        self._inbox.append((tokens, payload))

    cpdef flush(self):
        cdef list inbox = self._inbox
        cdef list corked = []
        cdef dict by_token = self.by_token
        cdef dict frames
        cdef PyObject* found
        cdef Seat seat
        cdef Connection conn
        cdef bytes payload, frame
        cdef object join_ref, last_ref
        cdef str last_topic, last_event
        cdef bint last_v2
        cdef long long delivered = 0
        self._inbox = []
        try:
            for item in inbox:
                payload = <bytes>(<tuple>item)[1]
                frame = None  # the last envelope's frame: members on one topic share it
                last_ref = last_topic = last_event = None
                last_v2 = False
                frames = None  # the others', for members whose envelopes differ
                for token in <list>(<tuple>item)[0]:
                    found = PyDict_GetItem(by_token, token)
                    if found is NULL:
                        continue  # gone meanwhile; the authority hears of it
                    seat = <Seat>found
                    conn = seat.conn
                    found = PyDict_GetItem(conn.channels, seat.topic)
                    if found is NULL:
                        continue  # its topic left meanwhile (a V1 join's join_ref is None: still joined)
                    join_ref = <object>found
                    if conn.writing_paused or conn.aborted:
                        self._drop(seat)
                        continue
                    if seat.dropped:
                        log.info("relay_member_caught_up", conn=conn.cid, topic=seat.topic, dropped=seat.dropped)
                        seat.dropped = 0
                    if conn.cork():
                        corked.append(conn)
                    if frame is None or not (
                        conn.v2 == last_v2 and seat.topic == last_topic and conn.event == last_event
                        and (join_ref is last_ref or (type(join_ref) is type(last_ref) and join_ref == last_ref))
                    ):
                        if frame is not None:  # another envelope in this message: keep each one built
                            if frames is None:
                                frames = {}
                            frames[(last_v2, type(last_ref), last_ref, last_topic, last_event)] = frame
                            frame = frames.get((conn.v2, type(join_ref), join_ref, seat.topic, conn.event))
                        if frame is None:
                            frame = push_raw(conn.v2, join_ref, seat.topic, conn.event, payload)
                        last_v2, last_ref, last_topic, last_event = conn.v2, join_ref, seat.topic, conn.event
                    conn.send(frame)
                    delivered += 1
        finally:
            self.delivered += delivered
            for conn in corked:
                conn.uncork()

    cdef _drop(self, Seat seat):
        if not seat.dropped:
            log.warning(
                "relay_member_slow",
                conn=seat.conn.cid,
                topic=seat.topic,
                note="not reading its output: relayed messages are dropped until it catches up",
            )
        seat.dropped += 1
        self.dropped += 1
