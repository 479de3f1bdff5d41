"""Make an audiobook without a server.

    python -m studio.audiobook book.epub --voice jm_kumo [--character-voice jf_alpha] [--chapters 1,3]
        --output book.m4b

Reads the book (EPUB, PDF, Markdown or text), speaks the chosen chapters (1 = the first; default:
all) and writes the M4B (chapters, title, author, cover) to --output; the chapter MP3s, subtitles and
chapters.json go to `<output stem>_files/` beside it, where the sentences made so far are kept too:
running the same command again after a stop goes on from there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from studio.errors import StudioError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("book", type=Path, help="the book: .epub, .pdf, .md or .txt")
    parser.add_argument("--voice", default="jm_kumo", help="the narrator's voice id")
    parser.add_argument("--character-voice", default=None, help="a voice for quoted speech")
    parser.add_argument("--chapters", default="", help="chapter numbers, e.g. 1,3,5-7 (default: all)")
    parser.add_argument("--output", type=Path, default=None, help="the M4B to write (default: <book>.m4b)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--language", default=None, help="default: each sentence's own")
    parser.add_argument("--no-quality-check", action="store_true", help="do not hear sentences back")
    args = parser.parse_args(argv)
    if not args.book.is_file():
        parser.error(f"{args.book} does not exist")
    output = args.output or args.book.with_suffix(".m4b")

    from studio.config import Settings
    from studio.core import Studio
    from studio.services.audiobook import AudiobookConfig, chapter_numbers

    studio = Studio(Settings())
    service = studio.audiobook
    started = time.monotonic()

    def progress(percent: float, step: str) -> None:
        elapsed = time.monotonic() - started
        eta = f", ~{elapsed * (100 - percent) / percent:.0f} s left" if percent > 1 else ""
        print(f"{percent:5.1f}%  {step}{eta}", file=sys.stderr, flush=True)

    try:
        kept = service.keep(args.book.read_bytes(), args.book.name)
        config = AudiobookConfig.parse(
            {
                "book": kept,
                "voice": args.voice,
                "character_voice": args.character_voice,
                "chapters": chapter_numbers(args.chapters),
                "speed": args.speed,
                "language": args.language,
                "quality_check": not args.no_quality_check,
            },
            where="arguments",
        )
        planned = service.prepare_task(config)
        folder = output.with_name(f"{output.stem}_files")
        folder.mkdir(parents=True, exist_ok=True)
        result = service.render(planned, folder, progress, lambda line: print(line, file=sys.stderr))
    except StudioError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    shutil.move(folder / "book.m4b", output)
    quality = result.get("quality", {})
    print(
        f"{output}: {result['title']}, {result['chapters']} chapters, {result['duration'] / 60:.1f} min; "
        f"other files in {folder}"
        + (f"; quality: {quality['checked']} checked, {len(quality['failing'])} failing" if quality else "")
    )
    for item in quality.get("failing", []):
        print(f"  check at {item['start']:.1f} s: '{item['text']}' heard as '{item['heard']}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
