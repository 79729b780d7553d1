"""The fuzzer: a seeded, coverage-free mutation engine and the loop that feeds targets (MicroPython and CPython).

Rules this file keeps:
1. Deterministic: input i of a run is a function of (target, seed, i) only. The generator is a 32-bit xorshift
   computed with masks, so CPython and the MicroPython unix port draw the same numbers and the same inputs: a
   failure seen on MicroPython is regenerated on CPython from its index (tests/fuzz/test_fuzz_mp.py does that
   for a hang, where the MicroPython process can no longer say what it was running).
2. A target is a function of one input. It raises one of the target's documented error types for bad input, or
   returns; it asserts its own properties (no lost data, split points change nothing). Anything else, an error
   message that is empty or longer than one line, or a hang, is a failure of that input.
3. The per-input time bound is the caller's watchdog (`guard`): on CPython a CPU-time timer that raises Hang
   inside the target (tests/fuzz/conftest.py), on MicroPython the parent process watching the heartbeat lines.
"""

import binascii

_M32 = 0xFFFFFFFF


class Hang(BaseException):
    # A BaseException: a target's own `except Exception` must not swallow the watchdog.
    pass


class FuzzFailure(Exception):
    def __init__(self, target, index, data, why):
        super().__init__(f"{target} input {index}: {why}; input {show(data)}")
        self.target = target
        self.index = index
        self.data = data


def show(data):
    # An input as one line: hex for bytes, repr for the structured inputs (tuples holding bytes, JSON trees).
    if isinstance(data, (bytes, bytearray)):
        return "hex:" + binascii.hexlify(data).decode()
    return repr(data)


class Rng:
    def __init__(self, seed):
        self.x = (seed * 2654435761 + 0x9E3779B9) & _M32 or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        self.x = x
        return x

    def below(self, n):
        return self.next() % n

    def choice(self, seq):
        return seq[self.next() % len(seq)]

    def chance(self, one_in):
        return self.next() % one_in == 0

    def raw(self, n):
        return bytes(self.next() & 0xFF for _ in range(n))


# Bytes that sit on the boundaries parsers and codecs care about (sizes, signs, separators, CBOR heads).
INTERESTING = (0x00, 0x01, 0x09, 0x0A, 0x0D, 0x20, 0x22, 0x27, 0x2C, 0x7B, 0x7D, 0x5B, 0x5D, 0x7F, 0x80, 0xFF,
               0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1F, 0x3F, 0x5F, 0x9F, 0xBF, 0xF6, 0xF9, 0xFA, 0xFB)
NUMBERS = (b"0", b"-1", b"1", b"255", b"65535", b"65536", b"2147483648", b"4294967296", b"9223372036854775808",
           b"18446744073709551616", b"99999999999999999999999", b"1e308", b"1e999", b"-0", b"0x10", b"1.5")


def mutate(rng, data, seeds, tokens):
    # 1 to 4 stacked edits of one seed: bit flips, interesting bytes, cuts, inserts, copies, tokens, numbers,
    # splices with another seed. Bytes in, bytes out; the edits keep most of the seed so they reach deep.
    for _ in range(1 + rng.below(4)):
        n = len(data)
        op = rng.below(11)
        i = rng.below(n + 1)
        if op == 0 and n:
            i = rng.below(n)
            data = data[:i] + bytes((data[i] ^ (1 << rng.below(8)),)) + data[i + 1:]
        elif op == 1 and n:
            i = rng.below(n)
            data = data[:i] + bytes((rng.choice(INTERESTING),)) + data[i + 1:]
        elif op == 2:
            data = data[:i] + data[i + 1 + rng.below(16):]
        elif op == 3:
            data = data[:i] + rng.raw(1 + rng.below(8)) + data[i:]
        elif op in (4, 5) and tokens:
            data = data[:i] + rng.choice(tokens) + data[i:]
        elif op == 6 and n:
            j = rng.below(n)
            data = data[:i] + data[j:j + 1 + rng.below(32)] + data[i:]
        elif op == 7:
            other = rng.choice(seeds)
            data = data[:i] + other[rng.below(len(other) + 1):]
        elif op == 8:
            data = data[:i]
        elif op == 9:
            # a run of digits becomes another number (sizes, lengths, ports)
            j = i
            while j < n and 0x30 <= data[j] <= 0x39:
                j += 1
            data = data[:i] + rng.choice(NUMBERS) + data[j:]
        else:
            data = data + rng.choice(tokens or NUMBERS)
    return data


def byte_inputs(seeds, tokens):
    # -> gen(rng): a seed as it is (1 in 16), else a mutated one.
    def gen(rng):
        data = rng.choice(seeds)
        if rng.chance(16):
            return data
        return mutate(rng, data, seeds, tokens)

    return gen


class NoGuard:
    def start(self, index, data):
        pass

    def stop(self):
        pass


def run(name, target, gen, allowed, n, seed, guard=None, first=0):
    # Feeds inputs first..n-1 of (name, seed) to target. -> {error type name: count, "ok": count}.
    # Raises FuzzFailure naming the input; an allowed error must have a clear message (one non-empty line).
    # Raised outside the except clauses, so the report is the failure alone, not a chain of handlers.
    guard = guard or NoGuard()
    rng = Rng(seed)
    counts = {"ok": 0}
    for i in range(n):
        data = gen(rng)
        if i < first:
            continue
        why = None
        guard.start(i, data)
        try:
            target(data)
            counts["ok"] += 1
        except allowed as e:
            text = str(e)
            if not text or "\n" in text or "\r" in text:
                why = f"error {type(e).__name__} without a one-line message: {text!r}"
            k = type(e).__name__
            counts[k] = counts.get(k, 0) + 1
        except Hang:
            why = "no result within the per-input time bound (hang)"
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
        finally:
            guard.stop()
        if why is not None:
            raise FuzzFailure(name, i, data, why)
    return counts


def nth_input(gen, seed, index):
    # Input `index` of a run, regenerated (rule 1).
    rng = Rng(seed)
    data = None
    for _ in range(index + 1):
        data = gen(rng)
    return data
