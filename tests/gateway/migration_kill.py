"""A child process that opens a store and is SIGKILLed just before a migration commits."""

from __future__ import annotations

import textwrap

__all__ = ["kill_before_commit"]


def kill_before_commit(trigger: str) -> str:
    """Python source: open the store at argv[1]; once a statement starting with ``trigger``
    has run, the next COMMIT is never reached (the power goes, the transaction is open)."""
    return textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from pathlib import Path

        import aiosqlite

        from gateway.store import Store

        execute = aiosqlite.Connection.execute
        armed = False

        async def dying_execute(self, sql, parameters=None):
            global armed
            if sql.startswith({trigger!r}):
                armed = True
            elif sql == "COMMIT" and armed:
                os.kill(os.getpid(), signal.SIGKILL)
            return await execute(self, sql, parameters)

        aiosqlite.Connection.execute = dying_execute

        async def main():
            async with Store(Path(sys.argv[1])):
                pass

        asyncio.run(main())
        """
    )
