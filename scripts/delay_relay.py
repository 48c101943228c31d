#!/usr/bin/env python3
"""A userspace TCP relay that adds a fixed one-way delay: a WAN emulator for the
network-namespace study when the kernel has no netem qdisc.

    python scripts/delay_relay.py --delay-ms 50 LISTEN_HOST:PORT=TARGET_HOST:PORT [...]

Every byte received on a listening port is forwarded to its target (and every
byte coming back to the client) ``delay_ms`` after it arrived, in order, so each
message crossing the relay is delayed once by exactly that much plus the
relay's own small cost.  Bandwidth is not limited here (tbf in the namespaces
does that).  Runs until SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time


async def _pump(reader, writer, delay):
    """Copy reader to writer, each chunk released `delay` seconds after it arrived."""
    queue: asyncio.Queue = asyncio.Queue()

    async def release():
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the other side may be gone
            pass

    task = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait(None)
        await task


async def _serve(listen, target, delay):
    host, port = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def handle(reader, writer):
        try:
            treader, twriter = await asyncio.open_connection(thost, int(tport))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, twriter, delay), _pump(treader, writer, delay))

    server = await asyncio.start_server(handle, host, int(port), reuse_address=True)
    return server


async def main_async(pairs, delay):
    servers = [await _serve(l, t, delay) for l, t in pairs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("relay ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("pairs", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    args = ap.parse_args(argv)
    pairs = [p.split("=", 1) for p in args.pairs]
    asyncio.run(main_async(pairs, args.delay_ms / 1000.0))


if __name__ == "__main__":
    main()
