"""Per-row text metrics on a prediction and its reference, each a float in [0, 1].

- exact_match: 1 when the normalised texts are equal (see `Normalise`);
- contains: 1 when the normalised reference occurs in the normalised prediction;
- rouge: ROUGE-1/2/L F1 from `rouge_chinese` (the package MindFormers' ADGEN metric uses), on words; ROUGE-1/2
  count distinct n-grams, as that package does;
- bleu: sentence BLEU-4 from `nltk` (uniform weights, brevity penalty, `SmoothingFunction().method3` as in
  MindFormers' ADGEN metric), on words.

Words: Chinese (any CJK character in the text) is segmented with jieba as MindFormers' ADGEN evaluation does;
other text is split into words and punctuation marks. Both metrics are case-sensitive on the raw texts.
"""
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Dict, List

from mindtune.errors import ConfigError

GENERATION_METRICS = ("exact_match", "contains", "rouge", "bleu")
METRIC_COLUMNS = {"exact_match": ("exact_match",), "contains": ("contains",),
                  "rouge": ("rouge1", "rouge2", "rougeL"), "bleu": ("bleu",)}
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Normalise:
    """How exact_match and contains compare texts. Defaults: surrounding whitespace stripped, runs of
    whitespace collapsed; case and punctuation kept; the whole text compared."""
    whitespace: bool = True       # strip and collapse whitespace
    case: bool = False            # lower-case both texts
    punctuation: bool = False     # drop ASCII and Unicode punctuation
    first_line: bool = False      # compare only the prediction's first non-empty line

    def __call__(self, text: str, prediction: bool = False) -> str:
        if self.first_line and prediction:
            text = next((line for line in text.splitlines() if line.strip()), "")
        if self.case:
            text = text.lower()
        if self.punctuation:
            text = "".join(c for c in text if c not in string.punctuation
                           and not unicodedata.category(c).startswith("P"))
        if self.whitespace:
            text = " ".join(text.split())
        return text


def check_metrics(names, key: str = "--metrics") -> List[str]:
    names = list(names)
    unknown = [n for n in names if n not in GENERATION_METRICS]
    if unknown:
        raise ConfigError(f"{key}: unknown metric {unknown[0]!r}; choose from {', '.join(GENERATION_METRICS)}")
    return names


def words(text: str) -> List[str]:
    """Chinese text segmented by jieba (as MindFormers' ADGEN metric); other text split into words."""
    if _CJK.search(text):
        import jieba

        _quiet_jieba(jieba)
        return [w for w in jieba.cut(text) if w.strip()]
    return _WORDS.findall(text)


def exact_match(prediction: str, reference: str, norm: Normalise = Normalise()) -> float:
    return float(norm(prediction, prediction=True) == norm(reference))


def contains(prediction: str, reference: str, norm: Normalise = Normalise()) -> float:
    return float(norm(reference) in norm(prediction, prediction=True))


def rouge(prediction: str, reference: str) -> Dict[str, float]:
    """ROUGE-1, -2 and -L F1 over words (0 for an empty prediction)."""
    from rouge_chinese import Rouge

    hyp, ref = " ".join(words(prediction)), " ".join(words(reference))
    if not hyp or not ref:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    scores = Rouge().get_scores(hyp, ref)[0]
    return {"rouge1": scores["rouge-1"]["f"], "rouge2": scores["rouge-2"]["f"], "rougeL": scores["rouge-l"]["f"]}


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 over words, smoothed (nltk method3, as MindFormers' ADGEN metric)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    hyp, ref = words(prediction), words(reference)
    if not hyp or not ref:
        return 0.0
    return float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method3))


def score_row(prediction: str, reference: str, metrics, norm: Normalise = Normalise()) -> Dict[str, float]:
    """{column: score} for the requested metrics (rouge gives rouge1, rouge2, rougeL)."""
    out = {}
    for name in metrics:
        if name == "exact_match":
            out["exact_match"] = exact_match(prediction, reference, norm)
        elif name == "contains":
            out["contains"] = contains(prediction, reference, norm)
        elif name == "rouge":
            out.update(rouge(prediction, reference))
        elif name == "bleu":
            out["bleu"] = bleu(prediction, reference)
    return out


def _quiet_jieba(jieba):
    import logging

    jieba.setLogLevel(logging.WARNING)
