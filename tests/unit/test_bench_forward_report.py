"""`natsedge bench --forward`'s text report: a drain short enough to end between two stats lines of the edge has no
heap figure for it, and the report says so instead of failing (seen with --drain-count 160)."""

from host.tools.bench_forward import format_report


def _report(drain_heap_max, peak_heap):
    durable = {"size": 128, "records_per_s": 900.0, "written_per_stored": 1.5, "esp32_flash_records_per_s": 400.0,
               "heap_code": 5000, "heap_state": 700, "heap_after": 5900, "count": 16}
    drain = {"count": 160, "size": 128, "hub": "natsedge hub", "drain_s": 0.2, "stream_span_s": 0.1, "stored": 160,
             "fill_records_per_s": 800.0, "ready_heap_without_forward": 20000, "ready_heap_with_forward": 26000,
             "drain_heap_max": drain_heap_max, "peak_heap": peak_heap, "edge_command": "micropython -m edge x"}
    return {"micropython": "mp", "code": ".mpy", "append": [], "durable": durable, "drain": [drain]}


def test_a_drain_without_a_stats_line_reports_its_heap_as_not_sampled():
    text = format_report(_report(None, None))
    assert "highest during the drain not sampled (peak not sampled)" in text
    assert "160 stored" in text


def test_sampled_heap_figures_are_printed_in_bytes():
    text = format_report(_report(31000, 33500))
    assert "highest during the drain 31,000 B (peak 33,500 B)" in text
