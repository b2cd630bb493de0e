import numpy as np
import pytest

from vhrfm.data.sources import Item
from vhrfm.data.splits import allocate, check_disjoint, make_splits, select_items


@pytest.fixture
def synthetic_root(tmp_path, monkeypatch, make_raster):
    """A fake project root whose data/ holds a PAN (1000 px) and MS (250 px) pair of the same ground, and a lone scene."""
    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    (tmp_path / "data" / "s").mkdir(parents=True)
    make_raster(name="data/s/pan.tif", count=1, height=1000, width=1000)
    make_raster(name="data/s/ms.tif", count=4, height=250, width=250, res=2.0)
    make_raster(name="data/s/other.tif", count=4, height=1100, width=900)
    return [
        Item("s", "s/pan.tif", "pan", ("pan",), 0.5, "pair"),
        Item("s", "s/ms.tif", "ms", ("blue", "green", "red", "nir"), 2.0, "pair"),
        Item("s", "s/other.tif", "ms", ("blue", "green", "red", "nir"), 2.0, "other"),
    ]


def _overlaps_across_splits(df):
    bad = 0
    for _, g in df.groupby("path"):
        a = g[["row_off", "col_off", "height", "width", "split"]].to_numpy()
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                if a[i][4] == a[j][4]:
                    continue
                if a[i][0] < a[j][0] + a[j][2] and a[j][0] < a[i][0] + a[i][2] and a[i][1] < a[j][1] + a[j][3] and a[j][1] < a[i][1] + a[i][3]:
                    bad += 1
    return bad


def test_block_splits_are_disjoint_and_same_ground_shares_a_split(synthetic_root):
    kw = dict(tile_size=128, overlap=32, block_size=256, fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    df = make_splits(synthetic_root, **kw)
    assert set(df.split) == {"train", "val", "test"}
    assert check_disjoint(df) == []
    assert _overlaps_across_splits(df) == 0
    # the PAN and MS files of the same ground: block r.c has the same split in both
    pan = df[df.path == "s/pan.tif"].groupby("block").split.first()
    ms = df[df.path == "s/ms.tif"].groupby("block").split.first()
    assert pan.to_dict() == ms.to_dict() and len(pan) == 16
    # deterministic, and a different seed gives a different draw
    assert df.equals(make_splits(synthetic_root, **kw))
    assert not df.split.equals(make_splits(synthetic_root, **{**kw, "seed": 1}).split)


def test_check_disjoint_catches_overlap(synthetic_root):
    df = make_splits(synthetic_root, tile_size=128, overlap=32, block_size=256,
                     fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    broken = df.copy()
    i = broken.index[(broken.path == "s/other.tif")][0]
    broken.loc[i, "split"] = "test" if broken.loc[i, "split"] != "test" else "train"
    assert check_disjoint(broken)


def test_published_split_is_kept(synthetic_root):
    items = [Item(i.source, i.path, i.product, i.bands, i.gsd, i.group, published_split="test" if i.group == "other" else "train")
             for i in synthetic_root]
    df = make_splits(items, tile_size=128, overlap=0, block_size=256, fractions={"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    assert set(df[df.group == "other"].split) == {"test"} and set(df[df.group == "pair"].split) == {"train"}


def test_allocate_fractions_and_minimums():
    a = allocate([f"u{i}" for i in range(100)], {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 15, "test": 15}
    small = allocate(["a", "b", "c"], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]


def test_select_items_per_published_split(synthetic_root):
    items = [Item("s", f"p{i}", "rgb", ("red",), 1.0, f"g{i}", published_split=s) for i, s in enumerate("aabbbc")]
    assert [i.path for i in select_items(items, 1)] == ["p0", "p2", "p5"]
    assert len(select_items(items, None)) == 6


@pytest.mark.integration
def test_real_splits_are_spatially_disjoint_and_respect_published_test(real_data):
    from vhrfm.data.prepare import build_splits
    from vhrfm.data.sources import get_source

    df = build_splits("smoke")
    assert check_disjoint(df) == []
    seals = df[df.source == "seals_aerial_drone"]
    published = {it.path: it.published_split for it in get_source("seals_aerial_drone").items()}
    assert (seals.split == seals.path.map(published)).all()
    # parent photos never straddle splits
    assert seals.groupby("group").split.nunique().max() == 1
    for source, g in df.groupby("source"):
        assert (g.height > 0).all() and (g.width > 0).all(), source
    assert np.isin(df.split.unique(), ["train", "val", "test"]).all()


def test_stratified_allocation_spreads_val_and_test_over_the_scores():
    units = [f"u{i:02d}" for i in range(40)]
    scores = {u: i / 39 for i, u in enumerate(units)}          # u00 = no positive pixel ... u39 = all positive
    fr = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = allocate(units, fr, seed=0, scores=scores)
    assert a == allocate(units, fr, seed=0, scores=scores) and a != allocate(units, fr, seed=1, scores=scores)
    for split in ("val", "test"):
        picked = sorted(scores[u] for u, s in a.items() if s == split)
        assert len(picked) == 6
        # one unit per sixth of the score range: never all from one end, as a plain draw of 6 in 40 can be
        assert min(picked) < 0.2 and max(picked) > 0.8
        assert np.histogram(picked, bins=6, range=(0, 1))[0].max() <= 2
    assert sum(s == "train" for s in a.values()) == 28
    with pytest.raises(ValueError, match="no score"):
        allocate(units, fr, seed=0, scores={u: 0.0 for u in units[:-1]})


def test_per_source_tiling_and_stratified_blocks_from_the_label_mask(tmp_path, monkeypatch, make_raster):
    """A labelled source gets its own tile and block size; with ``stratify`` its val and test blocks are drawn
    across the blocks' positive share, read from the label mask (ignored pixels left out)."""
    import rasterio

    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    (tmp_path / "data" / "f").mkdir(parents=True)
    make_raster(name="data/f/img.tif", count=3, height=640, width=640, dtype="uint8")
    make_raster(name="data/f/other.tif", count=3, height=640, width=640, dtype="uint8")
    mask = np.zeros((640, 640), np.uint8)
    mask[:, 320:] = 1                                            # the right half is burned
    ignore = np.zeros((640, 640), np.uint8)
    ignore[:64, :64] = 1                                         # a cloud: not labelled
    for name, arr in (("mask.tif", mask), ("cloud.tif", ignore)):
        with rasterio.open(tmp_path / "data" / "f" / name, "w", driver="GTiff", width=640, height=640, count=1,
                           dtype="uint8") as dst:
            dst.write(arr[None])
    items = [Item("fire", "f/img.tif", "rgb", ("red", "green", "blue"), 10.0, "scene", mask="f/mask.tif",
                  ignore="f/cloud.tif"),
             Item("other", "f/other.tif", "rgb", ("red", "green", "blue"), 10.0, "scene2")]
    fr = {"train": 0.6, "val": 0.2, "test": 0.2}
    per = {"fire": {"tile_size": 64, "overlap": 0, "block_size": 128, "stratify": True}}
    df = make_splits(items, tile_size=256, overlap=0, block_size=320, fractions=fr, seed=0, per_source=per)
    fire, other = df[df.source == "fire"], df[df.source == "other"]
    assert set(fire.height) == {64} and fire.block.nunique() == 25 and set(other.height) == {256}
    assert check_disjoint(df) == []
    # blocks 0-1 of each row are unburned, 3-4 burned, 2 straddles: val and test each get both kinds
    for split in ("val", "test"):
        cols = {int(b.split(".")[-1]) for b in fire[fire.split == split].block}
        assert min(cols) <= 1 and max(cols) >= 3, (split, cols)
    from vhrfm.data.splits import block_positive_share
    assert block_positive_share(items[0], (0, 0, 128, 128)) == 0.0
    assert block_positive_share(items[0], (0, 256, 128, 384)) == 0.5
    with pytest.raises(ValueError, match="without a label mask"):
        make_splits(items, tile_size=256, overlap=0, block_size=320, fractions=fr, seed=0,
                    per_source={"other": {"stratify": True}})
