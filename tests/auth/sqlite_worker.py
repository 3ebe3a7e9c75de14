"""One of several processes hammering the same new SQLite token store (test_sqlite_processes).

    python sqlite_worker.py DB_PATH WORKER COUNT GO_FILE

Waits for GO_FILE so that every worker opens the fresh file at the same moment, then issues
COUNT tokens, looking each up by hash, touching it and listing all records in between; every
third token is revoked. Prints one line per token, "<id> <token hash>", and exits 0, or
prints the error on stderr and exits 1.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from auth.secret import TokenHasher
from auth.store import SqliteTokenStore, issue_token

SECRET = b"w" * 40


async def work(path: Path, worker: int, count: int) -> None:
    store = SqliteTokenStore(path)
    hasher = TokenHasher(SECRET)
    try:
        for number in range(count):
            new = await issue_token(
                store, hasher, name=f"w{worker}-{number}", scopes=["calc:*"], now=time.time()
            )
            found = await store.find(hasher.hash(new.token))
            assert found == new.record, (found, new.record)
            await store.touch(new.record.id, time.time())
            if number % 3 == 0:
                assert await store.revoke(new.record.id, time.time()) is not None
            await store.records()
            print(new.record.id, new.record.token_hash, flush=True)
    finally:
        await store.aclose()


def main() -> None:
    path, worker, count, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    deadline = time.monotonic() + 30
    while not Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.005)
    asyncio.run(work(path, worker, count))


if __name__ == "__main__":
    main()
