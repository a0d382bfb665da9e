"""XMP sidecars: valid RDF/XML, keywords merged into existing sidecars, images never touched."""

from __future__ import annotations

import hashlib
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from indexer.tags import xmp
from indexer.tags.xmp import XmpError

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
X = "adobe:ns:meta/"
XMP_NS = "http://ns.adobe.com/xap/1.0/"

EXISTING = """<?xml version="1.0" encoding="UTF-8"?>
<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 5.6-c140">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <!-- written by a photo manager -->
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmp:Rating="4" xmp:Label="Red">
   <dc:subject><rdf:Bag><rdf:li>Holiday</rdf:li><rdf:li>Dog</rdf:li></rdf:Bag></dc:subject>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Évian, summer</rdf:li></rdf:Alt></dc:title>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|France</rdf:li></rdf:Bag></lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keywords_in(path: Path) -> list[str]:
    """dc:subject keywords, read with a plain XML parser (independent of indexer.xmp)."""
    root = ET.parse(path).getroot()
    return [li.text for li in root.iter(f"{{{RDF}}}li") if li in _subject_items(root)]


def _subject_items(root: ET.Element) -> list[ET.Element]:
    return [li for s in root.iter(f"{{{DC}}}subject") for li in s.iter(f"{{{RDF}}}li")]


def strip_keywords(root: ET.Element) -> ET.Element:
    """The tree without dc:subject and clipsearch's bag, namespace-qualified, for comparison."""
    for desc in root.iter(f"{{{RDF}}}Description"):
        for child in list(desc):
            if child.tag in (f"{{{DC}}}subject", f"{{{xmp.NS['clipsearch']}}}keywords"):
                desc.remove(child)
    return root


def canonical(root: ET.Element) -> list[tuple]:
    return [(el.tag, sorted(el.attrib.items()), (el.text or "").strip()) for el in root.iter()]


@pytest.fixture
def photo(tmp_path, coco_images) -> Path:
    dest = tmp_path / "photo.jpg"
    shutil.copyfile(coco_images[0], dest)
    return dest


def test_new_sidecar_is_valid_xmp_and_image_untouched(photo):
    before, mtime = sha256(photo), photo.stat().st_mtime_ns
    path = xmp.write_sidecar(photo, ["dog", "beach", "dog", " "])
    assert path == photo.with_name("photo.jpg.xmp")
    root = ET.parse(path).getroot()
    assert root.tag == f"{{{X}}}xmpmeta"
    rdf = root.find(f"{{{RDF}}}RDF")
    desc = rdf.find(f"{{{RDF}}}Description")
    bag = desc.find(f"{{{DC}}}subject").find(f"{{{RDF}}}Bag")
    assert [li.text for li in bag.findall(f"{{{RDF}}}li")] == ["dog", "beach"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<?xpacket begin=") and text.rstrip().endswith('<?xpacket end="w"?>')
    assert sha256(photo) == before and photo.stat().st_mtime_ns == mtime
    assert xmp.read_keywords(path) == ["dog", "beach"]
    assert not [p for p in photo.parent.iterdir() if p.name.endswith(".tmp")]


def test_replace_naming_and_invalid_naming(photo):
    assert xmp.write_sidecar(photo, ["a"], naming="replace") == photo.with_name("photo.xmp")
    assert xmp.sidecar_path("x/IMG.JPEG", "append") == Path("x/IMG.JPEG.xmp")
    with pytest.raises(ValueError, match="naming"):
        xmp.sidecar_path(photo, "beside")


def test_merge_preserves_existing_content_and_keywords(photo):
    before = sha256(photo)
    sidecar = photo.with_name("photo.jpg.xmp")
    sidecar.write_text(EXISTING, encoding="utf-8")
    os.chmod(sidecar, 0o640)
    original = ET.parse(sidecar).getroot()
    xmp.write_sidecar(photo, ["dog", "beach", "sunset"])
    assert keywords_in(sidecar) == ["Holiday", "Dog", "beach", "sunset"]  # "dog" == "Dog"
    merged = ET.parse(sidecar).getroot()
    assert canonical(strip_keywords(merged)) == canonical(strip_keywords(original))
    desc = merged.find(f"{{{RDF}}}RDF").find(f"{{{RDF}}}Description")
    assert desc.get(f"{{{XMP_NS}}}Rating") == "4" and desc.get(f"{{{X}}}xmptk") is None
    assert merged.get(f"{{{X}}}xmptk") == "Adobe XMP Core 5.6-c140"
    text = sidecar.read_text(encoding="utf-8")
    assert "<!-- written by a photo manager -->" in text
    assert "xmlns:lr=" in text and "xmlns:xmp=" in text  # prefixes kept, not ns0/ns1
    assert text.startswith('<?xml version="1.0"') and '<?xpacket end="w"?>' in text
    assert (sidecar.stat().st_mode & 0o777) == 0o640
    assert sha256(photo) == before
    # idempotent: writing the same keywords again changes nothing
    again = sidecar.read_bytes()
    xmp.write_sidecar(photo, ["dog", "beach", "sunset"])
    assert sidecar.read_bytes() == again


def test_reexport_removes_only_keywords_clipsearch_added(photo):
    sidecar = photo.with_name("photo.jpg.xmp")
    sidecar.write_text(EXISTING, encoding="utf-8")
    xmp.write_sidecar(photo, ["beach", "sunset"])
    xmp.write_sidecar(photo, ["snow", "holiday"])
    assert keywords_in(sidecar) == ["Holiday", "Dog", "snow"]
    xmp.write_sidecar(photo, ["cat"], replace_own=False)
    assert keywords_in(sidecar) == ["Holiday", "Dog", "snow", "cat"]
    xmp.write_sidecar(photo, [])
    assert keywords_in(sidecar) == ["Holiday", "Dog"]  # the user's keywords always stay


def test_other_existing_forms_are_handled(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"not really a png")
    sidecar = tmp_path / "a.png.xmp"
    # bare rdf:RDF root, dc:subject as an attribute, several descriptions
    sidecar.write_text(
        f'<rdf:RDF xmlns:rdf="{RDF}"><rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.'
        'com/tiff/1.0/" tiff:Make="Canon"/><rdf:Description rdf:about="" '
        f'xmlns:dc="{DC}" dc:subject="Family"/></rdf:RDF>'
    )
    xmp.write_sidecar(img, ["people"])
    assert keywords_in(sidecar) == ["Family", "people"]
    root = ET.parse(sidecar).getroot()
    assert root.tag == f"{{{RDF}}}RDF"
    makes = [d.get("{http://ns.adobe.com/tiff/1.0/}Make") for d in root]
    assert makes == ["Canon", None]
    assert img.read_bytes() == b"not really a png"


def test_broken_sidecar_is_left_alone(tmp_path):
    img = tmp_path / "b.jpg"
    img.write_bytes(b"jpeg")
    sidecar = tmp_path / "b.jpg.xmp"
    sidecar.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed>")
    with pytest.raises(XmpError, match="invalid XML"):
        xmp.write_sidecar(img, ["dog"])
    assert sidecar.read_text() == "<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed>"
    sidecar.write_text("<html><body/></html>")
    with pytest.raises(XmpError, match="not an XMP packet"):
        xmp.write_sidecar(img, ["dog"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jpg", "b.jpg.xmp"]
