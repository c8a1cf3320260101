"""One module per CLI subcommand. Each defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, and imports its heavy dependencies inside ``run`` so that ``--help`` is fast.

Exit codes (DESIGN.md section 8): 0 completed (and expectations met), 1 the preflight failed or an
expectation was not met, 2 bad input or usage.
"""

from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def writable_path(path: str, flag: str) -> Path:
    """``path`` for an output option (``--out``, ``--plot``, ``--pcap``), checked before the test
    runs so a typo does not cost a whole preflight: ConfigError (exit 2) if it cannot be created."""
    from rtcprobe.core.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {path!r} is a directory")
    if not p.parent.is_dir():
        raise ConfigError(f"{flag} {path!r}: directory {str(p.parent)!r} does not exist")
    return p
