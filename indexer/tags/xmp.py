"""XMP sidecars: write tags as ``dc:subject`` keywords next to a photo, never touching the photo.

``write_sidecar("a/photo.jpg", ["dog", "beach"])`` creates ``a/photo.jpg.xmp`` (``naming=
"replace"``: ``a/photo.xmp``) or merges the keywords into the existing sidecar: every other
element, attribute, namespace and keyword is kept, keywords are not duplicated (compared
case-insensitively), and the file is replaced atomically (temporary file + rename). An
unparsable existing sidecar raises :class:`XmpError` and is left as it is.

The keywords clipsearch added are also listed in its own ``clipsearch:keywords`` bag, so a later
export removes the ones that no longer apply (``replace_own=True``) without ever removing a
keyword the user or another program wrote.
"""

from __future__ import annotations

import io
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "clipsearch": "https://github.com/clipsearch/clipsearch/ns/1.0/",
}
NAMINGS = ("append", "replace")
_PACKET_BEGIN = re.compile(rb"<\?xpacket\s+begin=[^>]*\?>")
_PACKET_END = re.compile(rb"<\?xpacket\s+end=[^>]*\?>")
_NEW_BEGIN = b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
_NEW_END = b'<?xpacket end="w"?>'


class XmpError(ValueError):
    """An existing sidecar cannot be parsed or has no place for keywords."""


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def sidecar_path(image_path: str | os.PathLike, naming: str = "append") -> Path:
    """``photo.jpg.xmp`` (append) or ``photo.xmp`` (replace) beside ``image_path``."""
    p = Path(image_path)
    if naming == "append":
        return p.with_name(p.name + ".xmp")
    if naming == "replace":
        return p.with_suffix(".xmp")
    raise ValueError(f"naming must be one of {', '.join(NAMINGS)}, got {naming!r}")


def _register_namespaces(data: bytes) -> None:
    """Keep the file's own prefixes on output (ElementTree's prefix table is global)."""
    for _event, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
        if prefix and not re.fullmatch(r"ns\d+", prefix):
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:
                pass
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)


def _new_tree() -> ET.Element:
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    desc = ET.SubElement(rdf, _q("rdf", "Description"))
    desc.set(_q("rdf", "about"), "")
    return root


def _parse(data: bytes) -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
    try:
        return ET.fromstring(data, parser=parser)
    except ET.ParseError as exc:
        raise XmpError(f"invalid XML: {exc}") from None


def _descriptions(root: ET.Element) -> list[ET.Element]:
    if root.tag == _q("rdf", "RDF"):
        rdf = root
    else:
        rdf = root.find(_q("rdf", "RDF"))
    if rdf is None:
        raise XmpError("no rdf:RDF element")
    descs = rdf.findall(_q("rdf", "Description"))
    if not descs:
        descs = [ET.SubElement(rdf, _q("rdf", "Description"))]
        descs[0].set(_q("rdf", "about"), "")
    return descs


def _bag(desc: ET.Element, prop: str, create: bool) -> ET.Element | None:
    """The rdf:Bag (or Seq/Alt) of property ``prop`` in ``desc``; made when ``create``."""
    if prop in desc.attrib:  # simple attribute form: turn it into a bag
        value = desc.attrib.pop(prop)
        bag = ET.SubElement(ET.SubElement(desc, prop), _q("rdf", "Bag"))
        ET.SubElement(bag, _q("rdf", "li")).text = value
        return bag
    el = desc.find(prop)
    if el is None:
        if not create:
            return None
        el = ET.SubElement(desc, prop)
    for kind in ("Bag", "Seq", "Alt"):
        container = el.find(_q("rdf", kind))
        if container is not None:
            return container
    bag = ET.Element(_q("rdf", "Bag"))
    if el.text and el.text.strip():  # <dc:subject>word</dc:subject>
        ET.SubElement(bag, _q("rdf", "li")).text = el.text.strip()
    el.text = None
    el.append(bag)
    return bag


def _items(bag: ET.Element | None) -> list[str]:
    if bag is None:
        return []
    return [(li.text or "").strip() for li in bag.findall(_q("rdf", "li"))]


def merge_keywords(
    root: ET.Element, keywords: Iterable[str], replace_own: bool = True
) -> ET.Element:
    """Add ``keywords`` to the dc:subject bag of the XMP tree ``root`` (in place)."""
    keywords = list(dict.fromkeys(k.strip() for k in keywords if k and k.strip()))
    descs = _descriptions(root)
    subject_prop, own_prop = _q("dc", "subject"), _q("clipsearch", "keywords")
    desc = next(
        (d for d in descs if d.find(subject_prop) is not None or subject_prop in d.attrib),
        descs[0],
    )
    subject = _bag(desc, subject_prop, create=True)
    assert subject is not None
    own_desc = next((d for d in descs if d.find(own_prop) is not None), desc)
    own = _bag(own_desc, own_prop, create=False)
    previous = {k.casefold() for k in _items(own)}
    wanted = {k.casefold() for k in keywords}
    if replace_own and previous:
        for li in list(subject.findall(_q("rdf", "li"))):
            word = (li.text or "").strip().casefold()
            if word in previous and word not in wanted:
                subject.remove(li)
    present = {k.casefold() for k in _items(subject)}
    added = [k for k in keywords if k.casefold() not in present]
    for word in added:
        ET.SubElement(subject, _q("rdf", "li")).text = word
    # Remember which keywords are ours: those we wrote now or before and still want.
    if replace_own:
        still_ours = [k for k in keywords if k.casefold() in previous or k in added]
    else:
        still_ours = _items(own) + [k for k in added if k.casefold() not in previous]
    if own is None:
        own = _bag(desc, own_prop, create=True)
    assert own is not None
    for li in list(own):
        own.remove(li)
    for word in still_ours:
        ET.SubElement(own, _q("rdf", "li")).text = word
    return root


def _serialize(root: ET.Element, original: bytes | None) -> bytes:
    """The packet bytes: the original's XML declaration and xpacket wrapper kept (new: added)."""
    if original is None:
        ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode").encode("utf-8")
    if original is None:
        return _NEW_BEGIN + b"\n" + body + b"\n" + _NEW_END + b"\n"
    head = tail = b""
    if original.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml"):
        head = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    begin, end = _PACKET_BEGIN.search(original), _PACKET_END.search(original)
    if begin:
        head += original[begin.start() : begin.end()] + b"\n"
    if end:
        tail = b"\n" + original[end.start() : end.end()]
    return head + body + tail + b"\n"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_sidecar(
    image_path: str | os.PathLike,
    keywords: Iterable[str],
    naming: str = "append",
    replace_own: bool = True,
) -> Path:
    """Create or merge the XMP sidecar of ``image_path``; returns the sidecar's path.

    The image itself is never opened. ``replace_own``: keywords clipsearch wrote before and no
    longer lists are removed (keywords from anyone else always stay).
    """
    path = sidecar_path(image_path, naming)
    try:
        original: bytes | None = path.read_bytes()
    except FileNotFoundError:
        original = None
    if original is not None and original.strip():
        root = _parse(original)
        _register_namespaces(original)
        if root.tag not in (_q("x", "xmpmeta"), _q("rdf", "RDF")):
            raise XmpError(f"{path}: not an XMP packet (root element {root.tag})")
    else:
        _register_namespaces(b"<x/>")
        root, original = _new_tree(), None
    try:
        merge_keywords(root, keywords, replace_own)
    except XmpError as exc:
        raise XmpError(f"{path}: {exc}") from None
    _atomic_write(path, _serialize(root, original))
    return path


def read_keywords(sidecar: str | os.PathLike) -> list[str]:
    """The dc:subject keywords of a sidecar file (all rdf:Description elements)."""
    root = _parse(Path(sidecar).read_bytes())
    out: list[str] = []
    for desc in _descriptions(root):
        bag = _bag(desc, _q("dc", "subject"), create=False)
        out.extend(_items(bag))
    return out
