"""How well the embedded Kokoro speaks Mandarin, Japanese and English, heard by the studio's ASR.

    .venv/bin/python bench/bench_languages.py [--voices jm_kumo,jf_alpha] [--sentences 12]

For each language and voice, every sentence below (none of them appears in the tests) is spoken
through the studio's own speech service with no language named (auto: detected per sentence, as a
client that sends none gets it), then transcribed by the studio's bundled multilingual Whisper:
once told the language (scored: CER for zh/ja after normalising script and numbers, WER for en) and
once not (did Whisper hear the right language?). For Mandarin the old path (the same model fed
espeak's `cmn` phonemes) is measured in the same run. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.kokoro_onnx import KokoroOnnxEngine  # noqa: E402
from studio.config import Settings  # noqa: E402
from studio.core import Studio  # noqa: E402
from studio.services.asr import transcript_error_rate  # noqa: E402
from studio.services.speech import SpeechRequest  # noqa: E402

SENTENCES = {
    "zh": [
        "春天来了，公园里的花都开了。",
        "请把窗户关上，外面风很大。",
        "他每天早上六点起床跑步。",
        "这家餐厅的饺子特别好吃。",
        "我们明天下午三点在图书馆见面。",
        "孩子们在操场上快乐地玩耍。",
        "这本书讲述了一个感人的故事。",
        "火车晚点了半个小时。",
        "她的中文说得越来越流利了。",
        "周末我想去海边看日出。",
        "电脑的价格是3500元。",
        "会议室在大楼的第十二层。",
    ],
    "ja": [
        "駅までは歩いて十分ほどかかります。",
        "昨日の夜は遅くまで本を読んでいました。",
        "この店のラーメンはとても美味しいです。",
        "来週の月曜日に会議があります。",
        "窓を開けてもいいですか。",
        "子供たちは公園で元気に遊んでいます。",
        "週末は家族と一緒に山に登りました。",
        "新しい携帯電話を買いたいと思っています。",
        "すみません、トイレはどこですか。",
        "明日の天気は晴れのち曇りです。",
        "日本語の勉強は楽しいですね。",
        "電車が少し遅れているようです。",
    ],
    "en-us": [
        "The library closes early on Sundays.",
        "The baker sold out of rye bread by noon.",
        "Our train leaves from platform four.",
        "She painted the kitchen a bright yellow.",
        "The children built a castle of sand.",
        "He forgot his umbrella at the office.",
        "A cold wind blew across the empty field.",
        "We ordered soup and fresh bread for lunch.",
        "The museum opens a new exhibit next month.",
        "My neighbor plays the piano every evening.",
        "The river was calm after the storm.",
        "They walked home under a sky full of stars.",
    ],
}
VOICES = ("jm_kumo", "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro")


@dataclass
class Row:
    language: str
    voice: str
    path: str
    rates: list[float]
    heard_right: int
    seconds: float

    def line(self) -> str:
        metric = "WER" if self.language.startswith("en") else "CER"
        detected = f"{self.heard_right}/{len(self.rates)}" if self.heard_right >= 0 else "-"
        return (
            f"| {self.language} | {self.voice} | {self.path} | {metric} {statistics.mean(self.rates):.3f} "
            f"| {max(self.rates):.2f} | {detected} | {self.seconds:.0f} |"
        )


def measure(studio: Studio, language: str, voice: str, sentences: list[str], old: bool) -> Row:
    started, rates, heard_right = time.monotonic(), [], 0
    kokoro = studio.registry.loaded("kokoro")
    assert isinstance(kokoro, KokoroOnnxEngine)
    for sentence in sentences:
        if old:  # what the studio did before: espeak's Mandarin phonemes ("cmn") into the same model
            audio, rate = kokoro.speak(sentence, kokoro.style(voice), 1.0, "cmn"), 24000
        else:
            speech = studio.speech.synthesize(SpeechRequest(text=sentence, voice=voice))
            audio, rate = speech.audio, speech.sample_rate
        told = studio.transcriber.transcribe(audio, rate, language=language)
        rates.append(transcript_error_rate(sentence, told.text, language))
        heard_right += studio.transcriber.transcribe(audio, rate).language == language
    path = "old: espeak cmn (language named)" if old else "studio, language auto"
    return Row(language, voice, path, rates, heard_right, time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voices", default=",".join(VOICES))
    parser.add_argument("--sentences", type=int, default=12, help="per language")
    parser.add_argument("--languages", default="zh,ja,en-us")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(Settings(data_dir=Path(tmp), weights_dir=Path(tmp) / "weights"))
        print("| language | voice | path | mean | worst | heard as that language (no hint) | s |")
        print("|---|---|---|---|---|---|---|")
        for language in args.languages.split(","):
            for voice in args.voices.split(","):
                sentences = SENTENCES[language][: args.sentences]
                print(measure(studio, language, voice, sentences, old=False).line(), flush=True)
                if language == "zh":
                    print(measure(studio, language, voice, sentences, old=True).line(), flush=True)


if __name__ == "__main__":
    main()
