"""Reading a book: EPUB, PDF, Markdown or plain text bytes -> a `Book` (title, author, cover,
chapters as (title, text)).

Uploads are hostile: the bytes must be what the name says (a zip for .epub, %PDF for .pdf, text for
.md/.txt), archives are checked for their unpacked size before anything is read, a password PDF or
a book with no words is refused, and every problem is a BadInput (422) saying what to fix.
"""

from __future__ import annotations

import io
import itertools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePath

from studio.errors import BadInput, TooLarge, UnsupportedMedia

BOOK_SUFFIXES = ("epub", "pdf", "md", "txt")
MAX_BOOK_CHARS = 3_000_000  # ~60 hours of speech
MAX_UNZIPPED_BYTES = 300 * 2**20  # an EPUB's files unpacked: more is a zip bomb, not a book
MAX_ZIP_ENTRIES = 10_000
MAX_PDF_PAGES = 5_000
MAX_COVER_PIXELS = 40_000_000
CHUNK_CHARS = 5_000  # a chapter when a book has no chapters of its own: ~5 minutes of speech
COVER_SIDE = 1400  # the cover kept as a JPEG at most this wide/tall (audiobook players' size)
# Lines that start a chapter in a plain text: "Chapter 1", "CHAPTER IV. The Sea", "Part Two", "第三章".
CHAPTER_LINE = re.compile(
    r"^\s*(?:(?:chapter|part|book)\s+(?:\d+|[ivxlcdm]+|[a-z]+)\b.{0,80}|第[0-9一二三四五六七八九十百千]+[章回节部].{0,40})\s*$",
    re.IGNORECASE | re.MULTILINE,
)
HEADING = re.compile(r"^(#{1,2})\s+(.+?)\s*#*\s*$", re.MULTILINE)
# XHTML elements that end a paragraph (their text is read with a break after it).
BLOCKS = ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "br", "tr", "section", "pre")


@dataclass(frozen=True)
class Chapter:
    title: str
    text: str


@dataclass
class Book:
    """A book as read: its chapters in reading order (each with words to speak)."""

    title: str
    author: str
    cover: bytes | None  # JPEG, re-encoded from the book's own image (None: it has none)
    chapters: list[Chapter] = field(default_factory=list)

    @property
    def characters(self) -> int:
        return sum(len(c.text) for c in self.chapters)


def book_suffix(filename: str) -> str:
    """The kind of book a file name says (epub, pdf, md, txt); 415 for any other."""
    suffix = PurePath(filename or "").suffix.lower().lstrip(".")
    suffix = {"markdown": "md", "text": "txt"}.get(suffix, suffix)
    if suffix not in BOOK_SUFFIXES:
        raise UnsupportedMedia(
            f"'{filename}' is not a book the studio reads: upload an .epub, .pdf, .md or .txt file",
            "unsupported_book",
        )
    return suffix


def read_book(data: bytes, filename: str, max_bytes: int) -> Book:
    """The book in `data`, of the kind `filename`'s suffix names."""
    suffix = book_suffix(filename)
    if len(data) > max_bytes:
        raise TooLarge(f"the book is larger than the {max_bytes // 2**20} MB upload limit", "book_too_large")
    stem = clean(PurePath(filename).stem)[:200] or "Untitled"
    reader = {"epub": _read_epub, "pdf": _read_pdf, "md": _read_markdown, "txt": _read_text}[suffix]
    book = reader(data, stem)
    book.chapters = [c for c in book.chapters if re.search(r"\w", c.text)]
    if not book.chapters:
        raise BadInput(
            f"'{filename}' has no words to read (a scanned PDF has only pictures of text)", "empty_book"
        )
    if book.characters > MAX_BOOK_CHARS:
        raise TooLarge(
            f"the book has {book.characters} characters; the limit is {MAX_BOOK_CHARS}", "book_too_long"
        )
    return book


def clean(text: str) -> str:
    """One line: whitespace runs as single spaces."""
    return " ".join(text.split())


def paragraphs(text: str) -> str:
    """`text` with each paragraph on one line and a blank line between paragraphs."""
    parts = (clean(p) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in parts if p)


# ---- EPUB -----------------------------------------------------------------------------------------
def _read_epub(data: bytes, stem: str) -> Book:
    import ebooklib
    from ebooklib import epub

    _check_zip(data)
    try:
        book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": False})
    except (
        Exception
    ) as error:  # ebooklib raises many kinds (KeyError, EpubException, lxml's) for a broken book
        raise BadInput(f"the EPUB cannot be read ({type(error).__name__}: {error})", "bad_book") from None

    def meta(name: str) -> str:
        values = book.get_metadata("DC", name)
        return clean(str(values[0][0])) if values and values[0][0] else ""

    titles = _toc_titles(book.toc)
    chapters = []
    for item_id, _ in book.spine:
        item = book.get_item_with_id(item_id)
        # The table of contents page (EPUB 3's nav) lists the chapters: it is not one.
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or isinstance(item, epub.EpubNav):
            continue
        text, heading = _xhtml_text(item.get_content())
        name = item.get_name()
        title = titles.get(name) or titles.get(PurePath(name).name) or heading
        chapters.append(Chapter(title or f"Chapter {len(chapters) + 1}", text))
    return Book(meta("title") or stem, meta("creator"), _cover(_epub_cover(book)), chapters)


def _check_zip(data: bytes) -> None:
    """An EPUB is a zip: refuse other bytes, a broken zip, and one that unpacks too big."""
    if not data.startswith(b"PK\x03\x04"):
        raise BadInput("the file is not an EPUB (an EPUB is a zip archive; this is not one)", "bad_book")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if archive.testzip() is not None:
                raise zipfile.BadZipFile("a file in it is damaged")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise BadInput(f"the EPUB's zip archive is damaged ({error})", "bad_book") from None
    if len(entries) > MAX_ZIP_ENTRIES or sum(e.file_size for e in entries) > MAX_UNZIPPED_BYTES:
        raise BadInput(
            f"the EPUB unpacks to more than {MAX_UNZIPPED_BYTES // 2**20} MB or {MAX_ZIP_ENTRIES} files",
            "bad_book",
        )


def _toc_titles(toc: list) -> dict[str, str]:  # type: ignore[type-arg]
    """File name in the book -> its first title in the table of contents (nested sections too)."""
    titles: dict[str, str] = {}
    stack = list(toc)[::-1]
    while stack:
        entry = stack.pop()
        if isinstance(entry, tuple | list):  # (Section, [children])
            section, children = entry[0], entry[1] if len(entry) > 1 else []
            stack += [*list(children)[::-1], section]
            continue
        href, title = getattr(entry, "href", None), clean(str(getattr(entry, "title", "") or ""))
        if href and title:
            name = href.split("#")[0]
            titles.setdefault(name, title)
            titles.setdefault(PurePath(name).name, title)
    return titles


def _xhtml_text(content: bytes) -> tuple[str, str]:
    """A chapter's words (paragraphs apart) and its first heading, from its XHTML."""
    import lxml.html

    try:
        root = lxml.html.document_fromstring(content)
    except Exception:  # lxml's ParserError / XMLSyntaxError: an empty or broken document has no text
        return "", ""
    for element in root.iter("script", "style", "head"):
        element.drop_tree()
    heading = next((clean(h.text_content()) for h in root.iter("h1", "h2", "h3")), "")
    for element in root.iter(*BLOCKS):
        element.tail = "\n\n" + (element.tail or "")
    return paragraphs(root.text_content()), heading[:200]


def _epub_cover(book: object) -> bytes | None:
    import ebooklib

    covers = list(book.get_items_of_type(ebooklib.ITEM_COVER))  # type: ignore[attr-defined]
    if not covers:  # EPUB 2: <meta name="cover" content="item id">
        for value, attributes in book.get_metadata("OPF", "cover"):  # type: ignore[attr-defined]
            item = book.get_item_with_id((attributes or {}).get("content") or value)  # type: ignore[attr-defined]
            if item is not None:
                covers.append(item)
    return covers[0].get_content() if covers else None


def _cover(data: bytes | None) -> bytes | None:
    """The cover as a JPEG of a sensible size; None when there is none or it is not an image."""
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_COVER_PIXELS:
                return None
            image.thumbnail((COVER_SIDE, COVER_SIDE))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=88)
            return out.getvalue()
    except Exception:  # PIL's many decode errors: a broken cover is left out, the book still reads
        return None


# ---- PDF ------------------------------------------------------------------------------------------
def _read_pdf(data: bytes, stem: str) -> Book:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip()[:5] == b"%PDF-":
        raise BadInput("the file is not a PDF (it does not start with %PDF-)", "bad_book")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # an owner password alone still reads
            raise BadInput("the PDF is password-protected: upload it without the password", "encrypted_book")
        pages = reader.pages
        if len(pages) > MAX_PDF_PAGES:
            raise BadInput(f"the PDF has {len(pages)} pages; the limit is {MAX_PDF_PAGES}", "book_too_long")
        texts = [paragraphs(page.extract_text() or "") for page in pages]
        starts = _outline_starts(reader)
        info = reader.metadata or {}
        title, author = clean(str(info.get("/Title") or "")), clean(str(info.get("/Author") or ""))
    except BadInput:
        raise
    except Exception as error:  # pypdf raises PdfReadError and plain ValueError/KeyError on damage
        kind = "" if isinstance(error, PdfReadError) else f"{type(error).__name__}: "
        raise BadInput(f"the PDF cannot be read ({kind}{error})", "bad_book") from None
    if starts:
        bounds = [*starts, (len(texts), "")]
        chapters = [
            Chapter(name, "\n\n".join(texts[start:end]))
            for (start, name), (end, _) in itertools.pairwise(bounds)
        ]
        if starts[0][0] > 0:  # pages before the first bookmark (a title page, a foreword)
            chapters.insert(0, Chapter("Opening", "\n\n".join(texts[: starts[0][0]])))
    else:
        chapters = _page_chunks(texts)
    return Book(title or stem, author, None, chapters)


def _outline_starts(reader: object) -> list[tuple[int, str]]:
    """(first page, title) of each top-level bookmark, in page order; [] without an outline."""
    try:
        outline = reader.outline  # type: ignore[attr-defined]
    except Exception:  # a broken outline: read the pages without it
        return []
    starts = {}
    for entry in outline:
        if isinstance(entry, list):  # children of the entry before: not chapters of their own
            continue
        try:
            page = reader.get_destination_page_number(entry)  # type: ignore[attr-defined]
        except Exception:
            continue
        if page is not None and page >= 0:
            starts.setdefault(page, clean(str(entry.title))[:200] or f"Page {page + 1}")
    return sorted(starts.items())


def _page_chunks(texts: list[str]) -> list[Chapter]:
    """Pages grouped into chapters of about CHUNK_CHARS, titled by their page range."""
    chapters, first, pending = [], 0, []
    for number, text in enumerate(texts):
        pending.append(text)
        if sum(map(len, pending)) >= CHUNK_CHARS or number == len(texts) - 1:
            span = f"Page {first + 1}" if first == number else f"Pages {first + 1}-{number + 1}"
            chapters.append(Chapter(span, "\n\n".join(pending)))
            first, pending = number + 1, []
    return chapters


# ---- Markdown and plain text ----------------------------------------------------------------------
def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise BadInput("the file is not text (it has binary bytes): upload UTF-8 text", "bad_book")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(
            f"the file is not UTF-8 text (byte {error.start} cannot be read): save it as UTF-8", "bad_book"
        ) from None


def _read_markdown(data: bytes, stem: str) -> Book:
    text = _decode(data)
    headings = list(HEADING.finditer(text))
    title = next((clean(_plain(h.group(2))) for h in headings if h.group(1) == "#"), "")
    # A single "# Book title" over "## chapters": the chapters are the ## ones.
    level = (
        "##"
        if sum(h.group(1) == "#" for h in headings) == 1 and any(h.group(1) == "##" for h in headings)
        else None
    )
    cuts = [h for h in headings if level is None or h.group(1) == level]
    chapters = []
    if (
        cuts
        and (opening := _plain(text[: cuts[0].start()]))
        and re.search(r"\w", opening.replace(title, "", 1))
    ):
        chapters.append(Chapter("Opening", opening))
    for heading, after in zip(cuts, [*cuts[1:], None], strict=False):
        name = clean(_plain(heading.group(2)))[:200]
        body = _plain(text[heading.end() : after.start() if after else len(text)])
        chapters.append(Chapter(name, f"{name}.\n\n{body}" if body else name))
    if not cuts:
        chapters = _size_chunks(_plain(text))
    return Book(title or stem, "", None, chapters)


def _plain(markdown: str) -> str:
    """Markdown as the words read aloud: no markup, links as their text, code fences and images out."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+)", "", text, flags=re.MULTILINE)
    text = re.sub(r"[*_`~]+", "", text)
    return paragraphs(text)


def _read_text(data: bytes, stem: str) -> Book:
    text = _decode(data)
    marks = list(CHAPTER_LINE.finditer(text))
    if len(marks) >= 2:
        chapters = []
        if opening := paragraphs(text[: marks[0].start()]):
            chapters.append(Chapter("Opening", opening))
        for mark, after in zip(marks, [*marks[1:], None], strict=False):
            name = clean(mark.group())[:200]
            body = paragraphs(text[mark.end() : after.start() if after else len(text)])
            chapters.append(Chapter(name, f"{name}.\n\n{body}" if body else name))
    else:
        chapters = _size_chunks(paragraphs(text))
    return Book(stem, "", None, chapters)


def _size_chunks(text: str) -> list[Chapter]:
    """Text cut at paragraph ends into parts of about CHUNK_CHARS (a longer paragraph stays whole)."""
    parts, pending = [], ""
    for paragraph in text.split("\n\n"):
        if pending and len(pending) + len(paragraph) > CHUNK_CHARS:
            parts.append(pending)
            pending = ""
        pending = f"{pending}\n\n{paragraph}" if pending else paragraph
    if pending:
        parts.append(pending)
    return [Chapter(f"Part {n}", part) for n, part in enumerate(parts, 1)]
