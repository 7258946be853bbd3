"""bench.profile's reading of py-spy's collapsed stacks: the hot spots and the flame graph."""

from __future__ import annotations

from pathlib import Path

from bench.profile import hot_spots, read, svg, tree

SERVER = 'process 2:"python -m zerodb_batch serve"'
CLIENT = 'process 1:"python -m bench.memory_upsert"'


def test_hot_spots_count_the_servers_busy_samples_only(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "\n".join(
            [
                f"{CLIENT};main (bench/x.py:1);build (bench/x.py:9) 50",  # the client
                f"{CLIENT};{SERVER};run (zerodb_batch/a.py:1);dumps (zerodb_batch/b.py:4) 6",
                f"{CLIENT};{SERVER};run (zerodb_batch/a.py:1);execute (psycopg/c.py:2) 3",
                f"{CLIENT};{SERVER};<module> (x.py:1);_load (<frozen importlib._bootstrap>:1) 9",
                f"{CLIENT};{SERVER};loop (a.py:1);EpollSelector.select (selectors.py:468) 7",
                f"{SERVER};run (zerodb_batch/a.py:1) 1",  # started on its own
            ]
        )
        + "\n"
    )
    stacks = read(raw)
    assert hot_spots(stacks) == [
        ("dumps (zerodb_batch/b.py:4)", 0.6),
        ("execute (psycopg/c.py:2)", 0.3),
        ("run (zerodb_batch/a.py:1)", 0.1),
    ]
    ours = dict(hot_spots(stacks, "zerodb_batch/"))
    assert ours == {"dumps (zerodb_batch/b.py:4)": 0.6, "run (zerodb_batch/a.py:1)": 0.4}

    image = svg(tree(stacks), "bench.x")
    assert image.startswith("<svg") and "dumps (zerodb_batch/b.py:4) (6 samples)" in image
