import csv

from fedmap.runs.metrics import COLUMNS, MetricsWriter


def test_a_resumed_run_keeps_the_columns_its_csv_was_started_with(tmp_path):
    old = [c for c in COLUMNS if c != "mask_sha"]  # a run directory from before that column
    (tmp_path / "metrics.csv").write_text(",".join(old) + "\n")
    writer = MetricsWriter(tmp_path)
    writer.write({c: 1 for c in COLUMNS})
    writer.close()
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == old and len(rows[1]) == len(old)


def test_a_new_run_gets_every_column_plus_the_extra_ones(tmp_path):
    writer = MetricsWriter(tmp_path, COLUMNS + ("flower_bytes_up",))
    writer.write({**{c: 0 for c in COLUMNS}, "flower_bytes_up": 7})
    writer.close()
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["flower_bytes_up"] == "7" and "mask_sha" in rows[0]
