"""oshpc-fanout's exit codes, mirroring common/exit_codes.hpp."""
OK = 0
SANDBOX_FAILED = 1
USAGE = 2
BAD_INPUT = 3
INFRASTRUCTURE = 4
CANCELLED = 5
