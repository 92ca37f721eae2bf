"""The sockets of a pass: one lane per resolver and transport, fed by the engine.

Each resolver gets ONE connected non-blocking UDP socket read by a draining reader callback, and
one pipelined TCP stream (plus a connection of its own for each drop check, see TcpLane._solo).
Replies are matched to queries by (ID, question) from the raw bytes; timeouts are one ordered
deque per lane, swept by the engine's one timer (not a task or a call_later per query).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from blocker.errors import BlockerError
from blocker.probe.model import ResolverTarget
from blocker.probe.wire import ID_BYTES, QuerySpec

if TYPE_CHECKING:
    from blocker.probe.engine import Bucket, Engine, Job


class LaneBase:
    """Queries to one resolver over one transport: send queue, pending IDs, timeout deque."""

    transport = ""
    max_in_flight = 60000          # stay well inside the 16-bit ID space

    def __init__(self, engine: Engine, target: ResolverTarget, bucket: Bucket) -> None:
        self.engine = engine
        self.target = target
        self.label = target.name or target.address
        self.bucket = bucket
        self.queue: deque[Job] = deque()
        self.pending: dict[int, Job] = {}
        self.timeouts: deque[tuple[float, int, Job, int]] = deque()
        self.last_reply = -math.inf
        self.replies = 0
        self.heartbeat: QuerySpec | None = None
        self.deferred: list[Job] = []
        self.dead: str | None = None      # set when the lane cannot be opened at all
        self.qid = random.randrange(65536)
        self.stride = random.randrange(1, 65536, 2)   # odd: visits all 65,536 IDs before repeating

    async def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def can_send(self) -> int:
        """How many more queries this lane may have in flight (its own cap, not the global one)."""
        return self.max_in_flight - len(self.pending)

    def send_some(self, budget: int, now: float) -> int:
        raise NotImplementedError

    @staticmethod
    def begin(job: Job, now: float) -> None:
        """Count an attempt; the first one starts the check's clock."""
        job.attempt += 1
        if job.first_sent < 0:
            job.first_sent = now

    def next_qid(self) -> int:
        pending = self.pending
        qid = self.qid
        while True:
            qid = (qid + self.stride) & 0xFFFF
            if qid not in pending:
                self.qid = qid
                return qid

    def on_wire(self, data: bytes, now: float) -> None:
        """A DNS message arrived: match it to a pending query by ID and question, then hand it on."""
        if len(data) < 12 or not data[2] & 0x80:
            return
        qid = (data[0] << 8) | data[1]
        job = self.pending.get(qid)
        if job is None:
            return
        question = job.spec.question
        if not data.startswith(question, 12) and data[12: 12 + len(question)].lower() != question.lower():
            return    # a stray or late reply that happens to reuse a live ID
        del self.pending[qid]
        self.engine.in_flight -= 1
        self.last_reply = now
        self.replies += 1
        if self.heartbeat is None and not job.heartbeat:
            self.heartbeat = job.spec
        self.engine.on_reply(job, data, now)

    def expire(self, now: float) -> None:
        """Fail every query whose deadline passed (the deque is in deadline order)."""
        timeouts, pending = self.timeouts, self.pending
        while timeouts and timeouts[0][0] <= now:
            _, qid, job, attempt = timeouts.popleft()
            if job.attempt != attempt or pending.get(qid) is not job:
                continue
            del pending[qid]
            self.engine.in_flight -= 1
            job.timeouts += 1
            self.engine.attempt_failed(job, "timeout", now)

    def fail_pending(self, reason: str, now: float) -> None:
        """Every query in flight on this lane failed at once (port unreachable, connection lost)."""
        jobs = list(self.pending.values())
        self.pending.clear()
        self.engine.in_flight -= len(jobs)
        for job in jobs:
            self.engine.attempt_failed(job, reason, now)


class UdpLane(LaneBase):
    """One connected non-blocking UDP socket, drained from a reader callback."""

    transport = "udp"

    def __init__(self, engine: Engine, target: ResolverTarget, bucket: Bucket) -> None:
        super().__init__(engine, target, bucket)
        self.sock: socket.socket | None = None
        self.writable_wait = False

    async def open(self) -> None:
        loop = self.engine.loop
        infos = await loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_DGRAM)
        family, _, proto, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            sock.connect(addr)     # the kernel then drops datagrams from anyone else
        except OSError:
            sock.close()
            raise
        self.sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self.sock is None:
            return
        loop = self.engine.loop
        loop.remove_reader(self.sock.fileno())
        if self.writable_wait:
            loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self.sock = None

    def send_some(self, budget: int, now: float) -> int:
        queue, pending, timeouts, ids = self.queue, self.pending, self.timeouts, ID_BYTES
        if self.sock is None:   # not opened, or closed: the engine never pumps such a lane
            return 0
        send = self.sock.send
        deadline = now + self.engine.timeout
        sent = 0
        qid, stride = self.qid, self.stride
        while sent < budget and queue:
            job = queue.popleft()
            qid = (qid + stride) & 0xFFFF
            while qid in pending:
                qid = (qid + stride) & 0xFFFF
            self.qid = qid
            spec = job.spec
            try:
                send(ids[qid] + (spec.tail if job.edns else spec.tail_plain))
            except BlockingIOError:
                queue.appendleft(job)
                self._wait_writable()
                break
            except OSError as exc:
                # A connected UDP socket reports an earlier ICMP error on the next call.
                self.begin(job, now)
                self.engine.attempt_failed(job, os_reason(exc), now)
                continue
            self.begin(job, now)
            job.qid = qid
            pending[qid] = job
            timeouts.append((deadline, qid, job, job.attempt))
            sent += 1
        self.engine.in_flight += sent
        return sent

    def _wait_writable(self) -> None:
        if not self.writable_wait and self.sock is not None:
            self.writable_wait = True
            self.engine.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        self.writable_wait = False
        if self.sock is not None:
            self.engine.loop.remove_writer(self.sock.fileno())
        self.engine.pump()

    def _readable(self) -> None:
        try:
            self._drain()
        except Exception as exc:  # a bug must end the pass, not leave it waiting forever
            self.engine.crash(exc)

    def _drain(self) -> None:
        """Drain the datagrams waiting (bounded, to stay fair), refilling the window as we go."""
        sock = self.sock
        if sock is None:
            return
        now = self.engine.loop.time()
        recv = sock.recv
        on_wire = self.on_wire
        pump = self.engine.pump
        for n in range(1, 1025):
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.fail_pending(os_reason(exc), now)
                continue
            on_wire(data, now)
            if not n & REFILL_EVERY_MASK:
                pump()      # keep the resolver fed while we work through a burst of replies
        pump()


REFILL_EVERY_MASK = 31  # refill the window every 32 replies of a burst


def os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "port unreachable (connection refused)"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


class TcpStream(asyncio.Protocol):
    """Length-prefixed DNS messages on one TCP connection, fed to the lane as they complete."""

    def __init__(self, lane: TcpLane) -> None:
        self.lane = lane
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.replies = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # create_connection gives a stream transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._split(data)
        except Exception as exc:  # a bug must end the pass, not leave it waiting forever
            self.lane.engine.crash(exc)

    def _split(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        now = self.lane.engine.loop.time()
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2: 2 + size])
            del buf[: 2 + size]
            self.replies += 1
            self.lane.on_wire(message, now)
        self.lane.engine.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lane.stream_lost(self, exc)


class TcpLane(LaneBase):
    """One pipelined TCP connection per resolver, (re)opened on demand."""

    transport = "tcp"
    max_in_flight = 100            # pipelined queries per connection; servers read them in turn

    def __init__(self, engine: Engine, target: ResolverTarget, bucket: Bucket) -> None:
        super().__init__(engine, target, bucket)
        self.stream: TcpStream | None = None
        self.connecting = False
        self.addr: tuple[Any, ...] | None = None

    async def open(self) -> None:
        infos = await self.engine.loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        self.addr = infos[0][4]

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None and stream.transport is not None:
            stream.transport.abort()

    def send_some(self, budget: int, now: float) -> int:
        stream = self.stream
        if stream is None or stream.transport is None or stream.transport.is_closing():
            if self.queue and not self.connecting:
                self.connecting = True
                self.engine.spawn(self._connect())
            return 0
        queue, pending, timeouts, ids = self.queue, self.pending, self.timeouts, ID_BYTES
        deadline = now + self.engine.timeout
        out: list[bytes] = []
        sent = 0
        while sent < budget and queue:
            job = queue.popleft()
            qid = self.next_qid()
            spec = job.spec
            if spec.check.action == "drop" and spec.check.expected == "blocked":
                self._solo(job, qid, now)
                sent += 1
                continue
            wire = ids[qid] + (spec.tail if job.edns else spec.tail_plain)
            out.append(len(wire).to_bytes(2, "big") + wire)
            self.begin(job, now)
            job.qid = qid
            pending[qid] = job
            timeouts.append((deadline, qid, job, job.attempt))
            sent += 1
        if out:
            stream.transport.write(b"".join(out))
        self.engine.in_flight += sent
        return sent

    def _solo(self, job: Job, qid: int, now: float) -> None:
        """A drop check gets a connection of its own.

        Why: over TCP a dropping resolver may close the connection instead of staying silent
        (Unbound does), which would also kill every query pipelined with it; alone on its
        connection, "closed without an answer" is attributable and counts as silence.
        """
        self.begin(job, now)
        self.engine.spawn(self._solo_exchange(job, ID_BYTES[qid] + job.spec.tail))

    async def _solo_exchange(self, job: Job, wire: bytes) -> None:
        engine = self.engine
        data: bytes | None = None
        reason = ""
        try:
            data = await tcp_exchange(self.target.host, self.target.port, wire, engine.timeout)
        except TimeoutError:
            reason = "timeout"
        except ClosedSilently:
            reason = "connection closed without an answer"
        except (OSError, ValueError) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
        engine.in_flight -= 1
        now = engine.loop.time()
        if data is not None:
            self.last_reply = now
            self.replies += 1
            engine.on_reply(job, data, now)
        else:
            if reason in ("timeout", "connection closed without an answer"):
                job.timeouts += 1
            engine.attempt_failed(job, reason, now)
        engine.pump()

    async def _connect(self) -> None:
        loop = self.engine.loop
        try:
            if self.addr is None:
                raise OSError("the lane was never opened")
            host, port = self.addr[0], self.addr[1]
            transport, stream = await asyncio.wait_for(
                loop.create_connection(lambda: TcpStream(self), host, port), self.engine.timeout)
        except (OSError, TimeoutError) as exc:
            self.connecting = False
            reason = "TCP connect: " + (os_reason(exc) if isinstance(exc, OSError) else "timeout")
            now = loop.time()
            jobs = list(self.queue)
            self.queue.clear()
            for job in jobs:
                self.begin(job, now)
                self.engine.attempt_failed(job, reason, now)
            self.engine.pump()
            return
        self.connecting = False
        if self.engine.closed:
            transport.abort()
            return
        self.stream = stream
        self.engine.pump()

    def stream_lost(self, stream: TcpStream, exc: Exception | None) -> None:
        """The server closed (idle timeout, restart): resend what was in flight on it.

        A connection that had answered something was healthy: its unanswered queries go back to
        the queue without spending an attempt (a few times at most). Otherwise they failed.
        """
        if stream is not self.stream:
            return
        self.stream = None
        now = self.engine.loop.time()
        jobs = list(self.pending.values())
        self.pending.clear()
        self.engine.in_flight -= len(jobs)
        for job in jobs:
            if stream.replies and job.requeues < 3:
                job.requeues += 1
                job.attempt -= 1
                self.queue.appendleft(job)
            else:
                self.engine.attempt_failed(job, "TCP connection closed" + (f" ({exc})" if exc else ""), now)
        if not self.engine.closed:
            self.engine.pump()



class ClosedSilently(BlockerError, ValueError):
    """The server closed a TCP connection without sending a whole answer."""


async def tcp_exchange(host: str, port: int, wire: bytes, timeout: float) -> bytes:
    """One query over a fresh TCP connection (drop checks, and a truncated UDP answer)."""
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
        finally:
            writer.close()
    try:
        data = await asyncio.wait_for(exchange(), timeout)
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        raise ClosedSilently("connection closed without an answer") from exc
    if data[:2] != wire[:2]:
        raise ValueError("answer ID does not match")
    return data



__all__ = ["REFILL_EVERY_MASK", "ClosedSilently", "LaneBase", "TcpLane", "TcpStream", "UdpLane", "os_reason",
           "tcp_exchange"]
