"""Fleet simulation: MicroPython unix-port edges against a hub, with partitions, crashes and a report.

This package is imported by MicroPython too (the edges run `sim.edgeapp`), so this file stays empty of code.
"""
