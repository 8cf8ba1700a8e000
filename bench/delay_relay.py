"""A delaying TCP relay: real network latency for a loopback fleet, without netem.

    delay_relay.py MAP.json --delay 0.025

This kernel has no ``netem`` queueing discipline, so the round trip a real fleet has comes from
here: one asyncio process listens on one address:port per host and forwards each connection to
the host's sshd, holding every chunk ``--delay`` seconds in each direction (a 50 ms round trip
with the default 0.025). Chunks keep their order and are not serialised behind each other: a
chunk read 1 ms after another leaves 1 ms after it (latency, not a slower link). Both sockets have
TCP_NODELAY (asyncio's default), so nothing waits on Nagle's algorithm.

MAP.json is ``[[listen_address, listen_port, target_address, target_port], ...]``. The process
prints ``ready`` once every listener is up and runs until SIGTERM or SIGINT, or until its stdin
closes (so it never outlives the bench that started it). bench/latency.py starts and stops it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, each chunk sent ``delay`` seconds after it arrived; EOF passes on likewise."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        if not sender.done():
            sender.cancel()


def _serve(target: tuple[str, int], delay: float):
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.wait_for(asyncio.open_connection(*target), 30)
        except (OSError, asyncio.TimeoutError):
            client_writer.close()
            return
        try:
            await asyncio.gather(_carry(client_reader, server_writer, delay),
                                 _carry(server_reader, client_writer, delay))
        except asyncio.CancelledError:
            pass  # the relay is stopping with this connection still open
        finally:
            for w in (client_writer, server_writer):
                w.close()
    return handle


async def _main(routes: list, delay: float) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    servers = [await asyncio.start_server(_serve((taddr, int(tport)), delay), laddr, int(lport), backlog=1024)
               for laddr, lport, taddr, tport in routes]

    class ParentGone(asyncio.Protocol):  # stdin reaches EOF when the bench that started this process ends
        def connection_lost(self, exc) -> None:
            done.set()
    await loop.connect_read_pipe(ParentGone, sys.stdin)
    print("ready", flush=True)
    await done.wait()
    for server in servers:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map")
    p.add_argument("--delay", type=float, default=0.025, help="seconds each chunk is held, each way")
    args = p.parse_args()
    with open(args.map) as f:
        routes = json.load(f)
    asyncio.run(_main(routes, args.delay))


if __name__ == "__main__":
    main()
