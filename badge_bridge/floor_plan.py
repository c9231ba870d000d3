"""A floor-plan drawing from the site file (``[[plans]]``), checked before anyone sees it.

The console shows the drawing as an image, never inlined, and serves it under a CSP of its own, so nothing
in it runs even if it got past this check. The check is there so that a plan exported from a CAD tool is
either a plain drawing or refused at load with the reason, not quietly served: no DOCTYPE or entity (so no
entity expansion, "billion laughs", and no external entity), no script, event handler, foreignObject or
animation, no reference outside the file except an embedded raster picture, a bounded size, and a
viewBox that the door positions are given in.

Parsed with the standard library's expat with DOCTYPE refused outright (what defusedxml would do; it is
not a dependency here).
"""

from __future__ import annotations

import math
import re
import xml.parsers.expat
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

MAX_BYTES = 2 * 1024 * 1024
"""A floor plan with an embedded raster picture fits; a file meant to exhaust the console does not."""
MAX_ELEMENTS = 50_000
MAX_DEPTH = 64
MAX_EXTENT = 1_000_000.0
"""The largest viewBox width or height, in the drawing's units."""
SVG_NS = "http://www.w3.org/2000/svg"
FORBIDDEN = frozenset({"script", "foreignObject", "iframe", "embed", "object", "handler", "listener", "set",
                       "animate", "animateMotion", "animateTransform", "animateColor", "discard"})
"""Elements that run code, embed other documents or change attributes (an href) after load."""
RASTER = re.compile(r"data:image/(png|jpeg|gif|webp)[;,]", re.IGNORECASE)
EXTERNAL_URL = re.compile(r"url\((?!\s*['\"]?\s*#)|image-set\(|(?<![\w-])src\(", re.IGNORECASE)
"""A CSS ``url(...)`` that is not a reference to an element of the drawing itself, or another way to load."""
CSS_ESCAPES = re.compile(r"[\\@]")
"""In CSS (a <style>, a style attribute): an escape (``u\\72l(``) or an at-rule (``@import``, ``@font-face``)
could spell a load the check above would not see; a floor plan needs neither."""


class DrawingError(ValueError):
    """Why a drawing is refused; the message is for the person editing the site file."""


@dataclass(frozen=True)
class ViewBox:
    x: float
    y: float
    width: float
    height: float

    def contains(self, px: float, py: float) -> bool:
        return self.x <= px <= self.x + self.width and self.y <= py <= self.y + self.height

    def __str__(self) -> str:
        return f"{self.x:g} {self.y:g} {self.width:g} {self.height:g}"


def relative_path(value: str) -> Path:
    """``value`` as the site file gives it: a path relative to the file's folder, without ``..``, naming an
    ``.svg`` file (checked without touching the disk, when the site file is loaded)."""
    rel = Path(value)
    if not value or rel.is_absolute() or value.startswith(("/", "\\")) or ".." in rel.parts or "\\" in value:
        raise DrawingError(f"{value!r} must be a path relative to the site file's folder, without '..'")
    if rel.suffix.lower() != ".svg":
        raise DrawingError(f"{value!r} must be an .svg file")
    return rel


def drawing_path(base_dir: Path, value: str) -> Path:
    """The drawing's file, inside the site file's folder even through links."""
    base = base_dir.resolve()
    path = (base / relative_path(value)).resolve()
    if not path.is_relative_to(base):
        raise DrawingError(f"{value!r} leads outside the site file's folder (through a link)")
    return path


def read_drawing(base_dir: Path, value: str) -> tuple[bytes, ViewBox]:
    """The checked drawing's bytes and its viewBox, or DrawingError saying what is wrong."""
    path = drawing_path(base_dir, value)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise DrawingError(f"{value!r}: no such file (looked for {path})") from None
    except OSError as exc:
        raise DrawingError(f"{value!r}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_BYTES:
        raise DrawingError(f"{value!r}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    return data, check_svg(data, value)


def check_svg(data: bytes, name: str) -> ViewBox:
    """The viewBox of an SVG document that is a plain drawing, else DrawingError."""
    checker = _Checker(name)
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = checker.doctype
    parser.EntityDeclHandler = checker.entity
    parser.ExternalEntityRefHandler = checker.external
    parser.ProcessingInstructionHandler = checker.instruction
    parser.StartElementHandler = checker.start
    parser.EndElementHandler = checker.end
    parser.CharacterDataHandler = checker.text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise DrawingError(f"{name!r}: not well-formed XML ({xml.parsers.expat.ErrorString(exc.code)}, "
                           f"line {exc.lineno})") from None
    if checker.viewbox is None:
        raise DrawingError(f"{name!r}: not an SVG drawing (no <svg> root element)")
    return checker.viewbox


class _Checker:
    """expat handlers: each raises DrawingError at the first thing a plain drawing does not have."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.depth = 0
        self.elements = 0
        self.style_depth: int | None = None
        self.style_text: list[str] = []
        self.viewbox: ViewBox | None = None

    def refuse(self, why: str) -> NoReturn:
        raise DrawingError(f"{self.name!r}: {why}")

    def doctype(self, *_args: object) -> None:
        self.refuse("has a DOCTYPE (entities could expand without bound or read other files); remove it")

    def entity(self, *_args: object) -> None:
        self.refuse("declares an entity; remove it")

    def external(self, *_args: object) -> int:
        self.refuse("refers to an external entity; remove it")

    def instruction(self, target: str, _data: str) -> None:
        if target.lower() == "xml-stylesheet":
            self.refuse("loads a style sheet (<?xml-stylesheet?>); put the style in the drawing")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        ns, _, local = tag.rpartition(" ")
        self.depth += 1
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            self.refuse(f"more than {MAX_ELEMENTS} elements")
        if self.depth > MAX_DEPTH:
            self.refuse(f"elements nested deeper than {MAX_DEPTH}")
        if self.elements == 1:
            if (ns, local) != (SVG_NS, "svg"):
                self.refuse(f"the root element is <{local}>, not an SVG <svg> ({SVG_NS})")
            self.viewbox = self._viewbox(attrs.get("viewBox"))
        if local in FORBIDDEN:
            self.refuse(f"has a <{local}> element (a drawing has no script, embedded document or animation)")
        if ns not in (SVG_NS, "") and local in ("html", "body", "div", "iframe", "script", "a"):
            self.refuse(f"has a <{local}> element of another language ({ns})")
        for name, value in attrs.items():
            attr = name.rpartition(" ")[2]
            if attr.lower().startswith("on"):
                self.refuse(f"<{local}> has an event handler ({attr}=...)")
            if attr == "href" and not (value.startswith("#") or RASTER.match(value)):
                self.refuse(f"<{local}> refers to {value[:60]!r}: only '#id' and embedded PNG, JPEG, GIF or "
                            "WebP pictures (data:image/...) are allowed")
            if EXTERNAL_URL.search(value) or (attr == "style" and CSS_ESCAPES.search(value)):
                self.refuse(f"<{local}> {attr}=... refers to something outside the drawing (url(...)), or has a "
                            "CSS escape or at-rule")
        if local == "style" and self.style_depth is None:
            self.style_depth, self.style_text = self.depth, []

    def end(self, _tag: str) -> None:
        if self.style_depth == self.depth:
            self.style_depth = None
            css = "".join(self.style_text)  # whole: a character reference splits the text into pieces
            if EXTERNAL_URL.search(css) or CSS_ESCAPES.search(css):
                self.refuse("its <style> refers to something outside the drawing (url(...)), or has a CSS escape "
                            "or at-rule (@import, @font-face)")
        self.depth -= 1

    def text(self, data: str) -> None:
        if self.style_depth is not None:
            self.style_text.append(data)

    def _viewbox(self, value: str | None) -> ViewBox:
        if value is None:
            self.refuse("the <svg> element has no viewBox (door positions are given in its coordinates)")
        parts = value.replace(",", " ").split()
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
            self.refuse(f"viewBox {value[:60]!r} is not four numbers (min-x min-y width height)")
        box = ViewBox(*numbers)
        if not (0 < box.width <= MAX_EXTENT and 0 < box.height <= MAX_EXTENT) or max(map(abs, numbers)) > MAX_EXTENT:
            self.refuse(f"viewBox {box} must have a width and height above 0 and numbers within ±{MAX_EXTENT:g}")
        return box
