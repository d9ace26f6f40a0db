"""A local Africa's Talking for the benches: answers every message (statusCode 101) after a
fixed delay, many at a time, and logs what it received.

    python bench/sms_gateway.py PORT DELAY_SECONDS LOG_FILE

Run as a process of its own, on asyncio (uvloop where installed), so that the gateway's own
cost does not share a core with the bench's polling: at a thousand messages a second a
thread-per-connection server was the bottleneck. It reads only what orderpay's sms channel
sends (HTTP/1.1, Content-Length bodies, kept-alive connections). Each message received is one
line of LOG_FILE: the time it arrived (time.time()), a tab, its `to` number; the lines are
written as they come, flushed every 0.1 s and at SIGTERM. It prints `ready` once it listens.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from typing import TextIO
from urllib.parse import parse_qs


def answer(number: str) -> bytes:
    body = json.dumps(
        {
            "SMSMessageData": {
                "Message": "Sent to 1/1",
                "Recipients": [
                    {
                        "statusCode": 101,
                        "number": number,
                        "status": "Success",
                        "cost": "GHS 0.0300",
                        "messageId": f"ATXid_{uuid.uuid4().hex}",
                    }
                ],
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def serve(port: int, delay: float, log: TextIO) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                form = parse_qs((await reader.readexactly(length)).decode())
                number = form.get("to", [""])[0]
                log.write(f"{time.time():.6f}\t{number}\n")
                await asyncio.sleep(delay)
                writer.write(answer(number))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def flush() -> None:
        while True:
            await asyncio.sleep(0.1)
            log.flush()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    flusher = asyncio.create_task(flush())
    print("ready", flush=True)
    async with server:
        await stopped.wait()
    flusher.cancel()
    log.flush()


def main() -> None:
    port, delay, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    try:
        from uvloop import new_event_loop
    except ImportError:
        from asyncio import new_event_loop
    with (
        open(path, "a", buffering=1 << 16) as log,
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        runner.run(serve(port, delay, log))


if __name__ == "__main__":
    main()
