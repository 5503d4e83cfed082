"""Constant-time stream resume (issue 14, item 4): a `SourceReader` position holds the byte offset of the next
sample and the shuffle buffer as (shard, offset) references, so a resume re-reads at most the buffer, whatever
the step, and continues with exactly the samples an uninterrupted reader gives (across epochs, split by shard
or by sample); an old (epoch, offset) position still resumes by replay."""
from __future__ import annotations

import pytest

from dsvl.data import streams
from dsvl.data.bad_samples import SkipCounter
from dsvl.data.shards import write_shards
from dsvl.data.streams import Part, SourceReader, expand_urls

SHUFFLE = 16


@pytest.fixture(scope="module")
def urls(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("shards")
    write_shards(({"__key__": f"s{i:04d}", "txt": f"sample {i} " * (1 + i % 7), "json": {"i": i}} for i in range(120)),
                 out, max_count=30)
    return expand_urls(str(out))


def reader(urls: list[str], part: Part = Part()) -> SourceReader:
    return SourceReader("src", urls, part, seed=5, encode=lambda raw: raw["__key__"], counter=SkipCounter(),
                        shuffle=SHUFFLE)


def take(r: SourceReader, n: int) -> list[str]:
    return [r.next_good()[0] for _ in range(n)]


@pytest.fixture()
def reads(monkeypatch) -> list[int]:
    """Counts raw samples read from tars."""
    count = [0]
    real = streams._tar_samples

    def counting(url, start=0):
        for item in real(url, start):
            count[0] += 1
            yield item

    monkeypatch.setattr(streams, "_tar_samples", counting)
    return count


@pytest.mark.parametrize("part", [Part(), Part(5, 6)], ids=["one part", "split by sample"])
@pytest.mark.parametrize("consumed", [0, 7, 60, 250])  # 250: the third epoch of one part
def test_resume_continues_exactly_and_reads_only_the_buffer(urls, part, consumed, reads):
    r = reader(urls, part)
    take(r, consumed)
    position = r.position
    expected = take(r, 40)
    reads[0] = 0
    resumed = reader(urls, part)
    resumed.seek(*position)
    assert reads[0] <= SHUFFLE  # the buffer's members, one seek each; nothing replayed
    assert take(resumed, 40) == expected


def test_position_before_a_sample_and_old_positions_replay(urls):
    r = reader(urls)
    take(r, 33)
    _, before = r.next_good()
    after_first = take(r, 5)
    legacy = reader(urls)
    legacy.seek(*before[:2])  # an (epoch, offset) position of an older checkpoint: replayed
    again = reader(urls)
    again.seek(*before)
    assert take(legacy, 6)[1:] == take(again, 6)[1:] == after_first
