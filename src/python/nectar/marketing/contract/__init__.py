"""Marketing's contract: the part of marketing that admin may import (shapes it shares, no internals)."""
