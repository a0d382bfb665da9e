"""Issue 6 through the command line: ``tag``, ``tags``, ``export xmp|csv|json``,
``search --tag`` and ``duplicates``, on a real index of coco-mini photos (tiny random CLIP)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from indexer.tags import xmp

from .indexer_helpers import copy_images, run_cli, run_json, write_config

VOCAB = {
    "templates": ["{}"],
    "top_n": None,
    "tags": {
        "dog": {"prompts": ["a dog"], "threshold": -1.0},
        "beach": {"prompts": ["a beach"], "threshold": -1.0},
    },
}
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/elements/1.1/}"
EXISTING = b"""<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">
   <dc:subject><rdf:Bag><rdf:li>family</rdf:li></rdf:Bag></dc:subject>
   <dc:creator><rdf:Seq><rdf:li>Ann</rdf:li></rdf:Seq></dc:creator>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keywords(sidecar) -> list[str]:
    """dc:subject keywords, parsed as plain RDF/XML (no help from indexer.xmp)."""
    root = ET.fromstring(sidecar.read_bytes())
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    rdf = root.find(f"{RDF}RDF")
    assert rdf is not None
    return [li.text for subject in rdf.iter(f"{DC}subject") for li in subject.iter(f"{RDF}li")]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, coco_images, tiny_checkpoint):
    """3 photos indexed and tagged (tags.auto) with a vocabulary every photo matches."""
    d = tmp_path_factory.mktemp("tagcli")
    photos = copy_images(coco_images[:3], d / "photos")
    config = write_config(d / "c.yaml", [d / "photos"], d / "idx", tiny_checkpoint,
                          tags={"vocabulary": VOCAB})  # fmt: skip
    rep = run_json(["index", "--no-progress"], config)
    assert rep["added"] == 3
    return d, config, photos


def test_tag_and_tags_commands(tagged):
    d, config, photos = tagged
    rep = run_json(["tag"], config)  # already tagged by `index`: nothing to do
    assert rep["changed"] == [] and rep["pending"] == 0 and rep["texts_encoded"] == 0
    rep = run_json(["tag", "--all"], config)
    assert sorted(rep["changed"]) == ["beach", "dog"] and rep["rescored"] == 3
    doc = run_json(["tags"], config)
    assert doc == {"images": 3, "tags": [{"tag": "beach", "count": 3}, {"tag": "dog", "count": 3}]}
    one = run_json(["tags", "--image", str(photos[0])], config)
    assert one["path"] == str(photos[0]) and {t["tag"] for t in one["tags"]} == {"dog", "beach"}
    assert run_json(["tags", "--image", str(one["id"])], config) == one
    proc = run_cli(["tags"], config)
    assert proc.returncode == 0 and "dog" in proc.stdout and "3" in proc.stdout
    proc = run_cli(["tags", "--image", "/nowhere.jpg"], config)
    assert proc.returncode == 1 and "not in the index" in proc.stderr


def test_export_xmp_merges_sidecars_and_never_touches_photos(tagged):
    d, config, photos = tagged
    before = {p: _sha(p) for p in photos}
    existing = xmp.sidecar_path(photos[0], "append")
    existing.write_bytes(EXISTING)
    proc = run_cli(["export", "xmp"], config)
    assert proc.returncode == 0, proc.stderr
    assert "3 sidecars written" in proc.stderr
    for p in photos:
        sidecar = xmp.sidecar_path(p, "append")
        kws = _keywords(sidecar)
        assert {"dog", "beach"} <= set(kws) and len(kws) == len(set(kws)), kws
    merged = existing.read_bytes()
    assert set(_keywords(existing)) == {"family", "dog", "beach"}
    root = ET.fromstring(merged)
    desc = next(root.iter(f"{RDF}Description"))
    assert desc.get("{http://ns.adobe.com/xap/1.0/}Rating") == "4"
    assert [li.text for li in root.iter(f"{RDF}li") if li.text == "Ann"] == ["Ann"]
    assert merged.startswith(b"<?xpacket begin=") and merged.rstrip().endswith(b'end="w"?>')
    # exporting again changes nothing and duplicates nothing
    assert run_cli(["export", "xmp"], config).returncode == 0
    assert existing.read_bytes() == merged
    # replace naming: photo.xmp
    proc = run_cli(["export", "xmp", "--naming", "replace"], config)
    assert proc.returncode == 0 and set(_keywords(photos[1].with_suffix(".xmp"))) == {"dog",
                                                                                     "beach"}  # fmt: skip
    assert {p: _sha(p) for p in photos} == before  # photos byte-identical
    for p in photos:
        xmp.sidecar_path(p, "append").unlink()
        p.with_suffix(".xmp").unlink()


def test_export_csv_and_json(tagged, tmp_path):
    d, config, photos = tagged
    out = tmp_path / "tags.csv"
    assert run_cli(["export", "csv", "--out", str(out)], config).returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 6 and {r["path"] for r in rows} == {str(p) for p in photos}
    proc = run_cli(["export", "json"], config)
    doc = json.loads(proc.stdout)
    assert sorted(e["path"] for e in doc) == sorted(str(p) for p in photos)
    assert all({t["tag"] for t in e["tags"]} == {"dog", "beach"} for e in doc)


def test_search_tag_filter(tmp_path, coco_images, tiny_checkpoint):
    """``--tag`` keeps only photos carrying the tag: with top_n 1 each photo has one of two."""
    photos = copy_images(coco_images[10:16], tmp_path / "photos")
    config = write_config(tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx",
                          tiny_checkpoint, tags={"vocabulary": VOCAB, "top_n": 1})  # fmt: skip
    run_json(["index", "--no-progress"], config)
    counts = {t["tag"]: t["count"] for t in run_json(["tags"], config)["tags"]}
    exported = json.loads(run_cli(["export", "json"], config).stdout)  # top_n applied
    assert all(len(e["tags"]) == 1 for e in exported) and len(exported) == len(photos)
    seen = set()
    for tag in ("dog", "beach"):
        tagged_paths = {e["path"] for e in exported if e["tags"][0]["tag"] == tag}
        assert len(tagged_paths) == counts.get(tag, 0)
        res = run_json(["search", "a photo", "-k", "50", "--tag", tag], config)
        assert {r["path"] for r in res["results"]} == tagged_paths
        assert res["candidates"] == len(tagged_paths)
        seen |= tagged_paths
    assert seen == {str(p) for p in photos}
    res = run_json(["search", "a photo", "--tag", "dog", "--tag", "beach"], config)
    assert res["results"] == []  # AND: top_n 1 never gives both


def test_duplicates_finds_resized_and_reencoded_copies(tmp_path, coco_images, tiny_checkpoint):
    lib = tmp_path / "photos"
    originals = copy_images(coco_images[20:24], lib)
    planted = {}
    for src, (scale, quality) in zip(originals[:2], [(0.5, 70), (0.8, 85)]):
        img = Image.open(src).convert("RGB")
        small = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        copy = lib / "copies" / f"{src.stem}_small.jpg"
        copy.parent.mkdir(exist_ok=True)
        small.save(copy, "JPEG", quality=quality)
        planted[str(src)] = str(copy)
    shutil.copyfile(originals[2], lib / "copies" / "exact.jpg")  # byte copy: same vector
    planted[str(originals[2])] = str(lib / "copies" / "exact.jpg")
    config = write_config(tmp_path / "c.yaml", [lib], tmp_path / "idx", tiny_checkpoint,
                          tags={"auto": False})  # fmt: skip
    run_json(["index", "--no-progress"], config)
    doc = run_json(["duplicates", "--threshold", "0.999"], config)
    groups = [{m["path"] for m in g["members"]} for g in doc["groups"]]
    for orig, copy in planted.items():
        assert any({orig, copy} <= g for g in groups), (orig, copy, groups)
    for g in doc["groups"]:  # the suggested keeper has the most pixels
        keep = g["members"][0]
        assert g["keep"] == keep["id"]
        assert keep["width"] * keep["height"] == max(m["width"] * m["height"] for m in g["members"])
    for orig in map(str, originals[:2]):  # the resized copies are never the keeper
        assert any(g["members"][0]["path"] == orig for g in doc["groups"])
    proc = run_cli(["duplicates", "--threshold", "0.999"], config)
    assert proc.returncode == 0 and "keep" in proc.stdout
    assert run_cli(["duplicates", "--threshold", "2"], config).returncode == 1
