#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Where the selftests spend their time, from a trace written with SELFTEST_TRACE=<file>.

Usage: scripts/selftest-profile.py <trace> [N]

Each trace line is a command a test ran, with its start time (selftests/lib.sh, run_test). The
time until the next line is charged to that command: a command's own time, not its children's
(a shell function's time is its body's); the harness's gates and cleanup are not traced. Prints the N (default 25) costliest commands over all
tests, then per test its total and its three costliest commands.
"""
import collections
import re
import signal
import sys

LINE = re.compile(r"^(\++) (\d+\.\d+) (\d+) (.*)$")


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    events = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            if m:
                events.append((float(m.group(2)), m.group(4)))
    events.sort(key=lambda e: e[0])
    by_cmd = collections.Counter()
    count = collections.Counter()
    by_test = collections.defaultdict(collections.Counter)
    test = "?"
    for (t, cmd), (t_next, _) in zip(events, events[1:]):
        if cmd.startswith("TEST "):
            test = cmd[5:]
            continue
        if cmd == "END":  # the test ended: the harness's gates follow, not traced
            continue
        words = cmd.split()
        name = words[0] if words else "?"
        # Variable assignments: charge the command substitution they ran, if any.
        if "=" in name and not name.startswith("="):
            name = name.split("=", 1)[0] + "=..."
        d = min(t_next - t, 600.0)
        by_cmd[name] += d
        count[name] += 1
        by_test[test][name] += d
    total = sum(by_cmd.values())
    print(f"{total:.0f} s in {sum(count.values())} commands")
    for name, d in by_cmd.most_common(top):
        print(f"{d:8.1f} s {count[name]:6d}x {d / count[name]:6.2f} s/x  {name}")
    print()
    for test, c in sorted(by_test.items(), key=lambda kv: -sum(kv[1].values())):
        worst = ", ".join(f"{n} {d:.1f}" for n, d in c.most_common(3))
        print(f"{sum(c.values()):7.1f} s  {test}: {worst}")


if __name__ == "__main__":
    main()
