"""One module per CLI subcommand. Each defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, and imports its heavy dependencies inside ``run`` so that ``--help`` is fast.

Exit codes (DESIGN.md section 8): 0 completed (and expectations met), 1 the preflight failed or an
expectation was not met, 2 bad input or usage.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
