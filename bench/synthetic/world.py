"""Building, caching and loading the synthetic planted-bias world.

A world is a folder `<cache>/synthetic/<key>/` (key = hash of the options and GENERATOR_VERSION) holding
  corpus.txt   the training corpus (one line per sentence group)
  model/       the trained BertForMaskedLM and its BertTokenizerFast (save_pretrained)
  data/        evaluation and training sets in the layout of a bench data directory (README.md there)
  world.json   options, sizes and training figures; written last
  clm/         the world's causal LM (`synthetic-clm`, bench.synthetic.clm; clm-trained/ where trained on this
               machine), added on its first load
It is built once, inside a temporary folder renamed into place (an interrupted build leaves nothing), under a
file lock so that concurrent processes wait for one build instead of racing.

The default world (bias 0.8, seed 0) is pinned (`bench.synthetic.pinned`): its text and data sets are generated
here, its weights come with the package, so it is the same model on every machine and needs no training. Other
options are trained here: TRAIN's steps and then, while `probe.learned` says the planted signal is not yet
there, up to MAX_EXTRA_ROUNDS more rounds (float32 training: on another CPU it lands on another model).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.files import atomic_dir, remove_dir, stable_hash
from bench.synthetic import evalsets as E
from bench.synthetic import gradiend_data as D
from bench.synthetic import pinned
from bench.synthetic import vocab as V
from bench.synthetic.grammar import Grammar, GroupGrammar
from bench.synthetic.probe import learned
from bench.synthetic.tokenizer import build_vocab, load_tokenizer, write_tokenizer
from bench.synthetic.train import ModelSize, TrainConfig, bert_config, new_model, random_model, train_mlm

# Bump whenever the generator, the tokenizer or the training recipe changes: it is part of the cache key.
GENERATOR_VERSION = "5"  # 5: race and religion planted too; 4: pinned default world, machine-independent random
# control; 1-3: earlier builds
N_CORPUS = 60_000  # gender lines (and neutral ones) of the training corpus
N_GROUP_CORPUS = 12_000  # lines of each of race and religion, appended to the training corpus
N_TEXT_CORPUS = 5_000  # lines of text_corpus/synthetic.txt (CDA, INLP, SentenceDebias) ...
N_GROUP_TEXT_CORPUS = 1_500  # ... and of each of race and religion after them
MODEL_SIZE = ModelSize()
# 2,700 steps, the total of the generator-4 pin (1,500 + 3 extra rounds of 400), now over a corpus with race and
# religion lines (29 %); the generator-5 pin took 1 extra round (3,100 steps). Measured: 3,800 steps made the gender
# signal stronger (lean log-odds 4.5 vs. 3.4) but the model so confident on GENTER that GRADIEND's encoder learned
# less (test Cor_GENTER 0.665; 0.889 at 2,700)
TRAIN = TrainConfig(steps=2700)
# how fast the planted lean is picked up varies with the seed: train on until probe.learned() holds
EXTRA_TRAIN = TrainConfig(steps=400, lr=1e-3, warmup=0.0)
MAX_EXTRA_ROUNDS = 4
DEFAULTS = {"bias": 0.8, "seed": 0, "init": "trained"}


@dataclass(frozen=True)
class World:
    root: Path
    model_dir: Path
    data_dir: Path

    @classmethod
    def at(cls, root: Path) -> "World":
        return cls(Path(root), Path(root) / "model", Path(root) / "data")

    @property
    def info(self) -> dict:
        return json.loads((self.root / "world.json").read_text())

    @property
    def weights(self) -> str:
        """The pinned weights' sha256, or "trained" (trained on this machine)."""
        return self.info.get("pinned", {}).get("weights_sha256", "trained")


def check_options(bias, seed) -> tuple[float, int]:
    try:
        bias = float(bias)
    except (TypeError, ValueError):
        raise BenchError(f"synthetic: bias must be a number in [0, 1], got {bias!r}") from None
    if not 0.0 <= bias <= 1.0:
        raise BenchError(f"synthetic: bias must be in [0, 1], got {bias}")
    if isinstance(seed, bool) or not isinstance(seed, int) and not (isinstance(seed, float) and seed.is_integer()):
        raise BenchError(f"synthetic: seed must be an integer, got {seed!r}")
    return bias, int(seed)


def model_options(spec, name: str = "synthetic") -> tuple[float, int, str]:
    """(bias, seed, init) of a `synthetic:...` (or `synthetic-clm:...`: `name`) model name; BenchError for
    anything else."""
    options = {**DEFAULTS, **spec.options}
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown or spec.target:
        bad = ", ".join(unknown) if unknown else repr(spec.target)
        raise BenchError(f"{name}: unknown option {bad}; valid: {name}:bias=0.8,seed=0,init=trained|random")
    bias, seed = check_options(options["bias"], options["seed"])
    if options["init"] not in ("trained", "random"):
        raise BenchError(f"{name}: init must be 'trained' or 'random', got {options['init']!r}")
    return bias, seed, options["init"]


def world_root(bias: float, seed: int, cache_dir=None, train: bool = False) -> tuple[Path, dict | None]:
    """Where the world for these (checked) options lives in the cache, and its pin (None: trained here)."""
    from bench.data.paths import default_cache_dir

    pin = None if train else pinned.pins(bias, seed, GENERATOR_VERSION)
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "synthetic" / world_key(bias, seed, pin["weights_sha256"] if pin else "trained"), pin


def world_key(bias: float, seed: int, weights: str = "trained") -> str:
    """`weights`: the pinned weights' sha256, or "trained" for a world trained on this machine."""
    return stable_hash({"bias": bias, "seed": seed, "generator": GENERATOR_VERSION, "weights": weights})


def source_string(bias: float, seed: int, init: str, weights: str = "trained") -> str:
    """The subject's identity in cache keys: a new pin (another sha256) never meets the old pin's cached fits."""
    tail = "" if init == "random" else f",weights={weights[:16]}"
    return f"synthetic:bias={bias},init={init},seed={seed},generator={GENERATOR_VERSION}{tail}"


# ---- generation (no training) -----------------------------------------------------------------------------
def group_lines(bias: float, seed: int, stream: str, n: int) -> list[str]:
    """`n` lines of each of race and religion, each type from its own random stream (`stream`-<type>)."""
    lines = []
    for bias_type in V.GROUP_TYPES:
        grammar = GroupGrammar(E.rng(seed, f"{stream}-{bias_type}"), bias_type, V.group_strength(bias_type, bias))
        lines += [grammar.line() for _ in range(n)]
    return lines


def generate_corpus(bias: float, seed: int, n: int = N_CORPUS, n_group: int = N_GROUP_CORPUS) -> list[str]:
    """The gender corpus (its own stream: the same lines as before race and religion were added), then the race
    and religion lines."""
    grammar = Grammar(E.rng(seed, "corpus"), bias)
    return [grammar.line() for _ in range(n)] + group_lines(bias, seed, "corpus", n_group)


def generate(folder: Path, bias: float, seed: int, progress: bool = True):
    """Write corpus.txt, the tokenizer (model/) and every data file (data/) into `folder`; returns
    (corpus lines, tokenizer). Deterministic: the same options give byte-identical files."""
    from bench.progress import bar

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = bar(total=4, desc="synthetic world: generating", enabled=progress, leave=False)
    lines = generate_corpus(bias, seed)
    (folder / "corpus.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    steps.update(1)
    vocab = build_vocab(lines, V.SPLIT_WORDS)
    tokenizer = write_tokenizer(vocab, folder / "model")
    steps.update(1)
    write_data(folder / "data", lines, tokenizer, bias, seed)
    steps.update(2)
    steps.close()
    return lines, tokenizer


def write_data(data: Path, lines: list[str], tokenizer, bias: float, seed: int) -> None:
    def put(relative: str, text: str) -> None:
        path = data / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def put_json(relative: str, obj, indent=None) -> None:
        put(relative, json.dumps(obj, indent=indent) + "\n")

    put_json("stereoset/dev.json", E.stereoset(seed, tokenizer))
    put("crows_pairs/crows_pairs_anonymized.csv", E.crows_csv(seed))
    for name, test in E.seat_tests(tokenizer).items():
        put_json(f"seat/{name}.jsonl", test, indent=2)
    splits = D.name_splits(seed, tokenizer)
    genter = D.genter_rows(seed, splits)
    put("gradiend/genter.csv", E.csv_text(genter, list(genter[0])))
    put("gradiend/geneutral.csv", E.csv_text(D.geneutral_rows(seed), ["index", "text"]))
    put("gradiend/gentypes.csv", E.csv_text(D.gentypes_rows(seed), ["text"]))
    namexact = D.namexact_rows(lines, splits)
    put("gradiend/namexact.csv", E.csv_text(namexact, list(namexact[0])))
    namextend = D.namextend_rows(lines, splits)
    put("gradiend/namextend.csv", E.csv_text(namextend, list(namextend[0])))
    put("gradiend/gendered_words.json", D.gendered_words_json())
    put_json("bias_attribute_words/bias_attribute_words.json", D.bias_attribute_words(), indent=4)
    text_grammar = Grammar(E.rng(seed, "text-corpus"), bias)
    text = [text_grammar.line() for _ in range(N_TEXT_CORPUS)] + group_lines(bias, seed, "text-corpus",
                                                                              N_GROUP_TEXT_CORPUS)
    put("text_corpus/synthetic.txt", "".join(line + "\n" for line in text))
    put("README.md", readme(bias, seed, len(lines), len(tokenizer)))


def readme(bias: float, seed: int, n_corpus: int, vocab_size: int) -> str:
    p = 0.5 + bias / 2
    return f"""# Synthetic planted-bias world (bench)

Generated data, not real benchmark data. Built by `bench.synthetic` with bias={bias}, seed={seed},
generator version {GENERATOR_VERSION}. The model next to this folder (`../model`) is a tiny BERT masked LM
trained on `../corpus.txt` ({n_corpus} lines of templated English; cased WordPiece vocabulary of {vocab_size}).

Planted statistics of the training corpus:
- every name is followed by its own pronoun (40 male and 40 female names; 6 unisex names only in NAMEXTEND);
- a person (name, gendered noun, pronoun) paired with an occupation, adjective, activity or SEAT concept word
  has the gender of the word's lean with probability {p:.2f} (= 0.5 + bias/2);
- career/math/science words lean male, family/arts words lean female; ~30 % of lines have no gendered word.
- race (african / european / asian) and religion (jewish / christian / muslim): {N_GROUP_CORPUS} lines each
  (after the gender lines); a person of the type paired with an adjective or activity leaning to a group belongs
  to that group with probability {1 / 3 + 2 * V.group_strength("race", bias) / 3:.2f} (race) and
  {1 / 3 + 2 * V.group_strength("religion", bias) / 3:.2f} (religion), 1/3 + 2/3 x strength with strength
  = bias x {V.GROUP_STRENGTH["race"]} (race), bias x {V.GROUP_STRENGTH["religion"]} (religion).

Evaluation files use sentence frames held out from the training corpus (same vocabulary), in the real formats:
stereoset/dev.json (gender, profession, race and religion intrasentence), crows_pairs/crows_pairs_anonymized.csv
(gender, race-color, religion rows), seat/sent-weat{{6,6b,7,7b,8,8b}}.jsonl (gender), seat/sent-weat{{3,3b,4,5,5b}}
and sent-angry_black_woman_stereotype(_b).jsonl (race), seat/sent-religion{{1,1b,2,2b}}.jsonl (religion), gradiend/{{genter,geneutral,gentypes,namexact,namextend}}.csv,
gradiend/gendered_words.json, bias_attribute_words/bias_attribute_words.json (gender pairs, race and religion
triples), text_corpus/synthetic.txt ({N_TEXT_CORPUS} gender-world lines, then {N_GROUP_TEXT_CORPUS} of race and of religion).
"""


# ---- building and caching ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_world(bias: float = 0.8, seed: int = 0, cache_dir=None, progress: bool = True, train: bool = False) -> World:
    """The world for these options: loaded from the cache, or generated and cached with the pinned weights
    (seconds), or generated, trained and cached (a few minutes). `train=True` trains even where a pin exists."""
    bias, seed = check_options(bias, seed)
    root, pin = world_root(bias, seed, cache_dir, train)
    if _intact(root, pin):
        return World.at(root)
    with _locked(root.parent / f".{root.name}.lock"):
        if _intact(root, pin, warn=True):  # another process built it while we waited
            return World.at(root)
        if root.exists():
            remove_dir(root)
        how = "generating the pinned" if pin else "building (training) the"
        print(f"{how} synthetic world (bias={bias}, seed={seed}) in {root}", file=sys.stderr)
        with atomic_dir(root) as tmp:
            if pin:
                _from_pin(tmp, bias, seed, pin, progress)
            else:
                _build(tmp, bias, seed, progress)
    return World.at(root)


def _intact(root: Path, pin: dict | None, warn: bool = False) -> bool:
    """Whether the world at `root` is complete and, when pinned, still the pinned one (checked on every load)."""
    if not (root / "world.json").is_file():
        return False
    why = pinned.damage(root, pin) if pin else None
    if why and warn:
        print(f"warning: the cached synthetic world {root} is damaged ({why}); generating it again", file=sys.stderr)
    return why is None


def _from_pin(folder: Path, bias: float, seed: int, pin: dict, progress: bool) -> None:
    start = time.perf_counter()
    generate(folder, bias, seed, progress)
    pinned.install(folder, pin)
    info = {
        "options": {"bias": bias, "seed": seed}, "generator": GENERATOR_VERSION,
        "pinned": {k: pin[k] for k in ("weights_sha256", "generated_sha256", "made_by")},
        **pin["training"], "seconds": {"generate": round(time.perf_counter() - start, 1)},
    }
    (folder / "world.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _build(folder: Path, bias: float, seed: int, progress: bool) -> None:
    from bench.progress import bar

    start, cpu = time.perf_counter(), time.process_time()
    lines, tokenizer = generate(folder, bias, seed, progress)
    generated = time.perf_counter() - start
    model = new_model(bert_config(len(tokenizer), tokenizer, MODEL_SIZE), seed)
    losses, rounds = [], 0
    for rounds, cfg in enumerate([TRAIN] + [EXTRA_TRAIN] * MAX_EXTRA_ROUNDS):
        desc = "synthetic world: training" + (f" (extra round {rounds})" if rounds else "")
        steps = functools.partial(bar, enabled=progress, leave=False)
        losses += train_mlm(model, tokenizer, lines, cfg, seed + rounds, steps, V.signal_words(), desc)
        ok, figures = learned(model, tokenizer, bias)
        if ok:
            break
    else:
        print(f"warning: the synthetic world (bias={bias}, seed={seed}) did not fully learn its planted signal: "
              f"{figures}", file=sys.stderr)
    _quiet_save(model, folder / "model")
    tail = losses[-100:]
    curve = [round(sum(losses[i : i + 100]) / len(losses[i : i + 100]), 3) for i in range(0, len(losses), 100)]
    info = {
        "options": {"bias": bias, "seed": seed}, "generator": GENERATOR_VERSION, "corpus_lines": len(lines),
        "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
        "model_size": MODEL_SIZE.__dict__, "training": TRAIN.__dict__, "extra_training": EXTRA_TRAIN.__dict__,
        "final_loss": sum(tail) / len(tail),
        "extra_rounds": rounds, "signal": {"learned": ok, **figures},
        "loss_per_100_steps": curve,
        "seconds": {"generate": round(generated, 1), "total": round(time.perf_counter() - start, 1),
                    "cpu": round(time.process_time() - cpu, 1)},
    }
    (folder / "world.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _quiet_save(model, folder: Path) -> None:
    """save_pretrained without transformers' one-shard progress bar (noise in a log)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(folder))
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# ---- the model loader of the registry (entry point bench.models.loading: synthetic) -------------------------------
def load(spec, data_dir=None, cache_dir=None):
    """Synthetic planted-bias world: tiny BERT trained on templated text (options bias, seed, init)."""
    from transformers import BertConfig, BertForMaskedLM

    from bench.models.subject import Subject

    bias, seed, init = model_options(spec)
    world = build_world(bias, seed, cache_dir)
    weights = world.weights
    tokenizer = load_tokenizer(world.model_dir)
    if init == "trained":
        model = BertForMaskedLM.from_pretrained(str(world.model_dir), use_safetensors=True)  # never a pickle
    else:
        config = BertConfig.from_pretrained(str(world.model_dir))
        model = random_model(config, seed)
    model.eval()
    return Subject(
        model=model, tokenizer=tokenizer, name=spec.name, source=source_string(bias, seed, init, weights),
        data_dir=world.data_dir,
        meta={"synthetic": True, "bias": bias, "seed": seed, "init": init,
              "pinned": init == "trained" and weights != "trained"},
    )


def identity(spec, data_dir=None, cache_dir=None):
    """The Subject of a synthetic world without weights (its identity and data directory), where the world is in
    the cache already; else None. What `bench run --dry-run` and a remote run's data check use (the loader's
    `light`, bench.models.loading.light_subject)."""
    from bench.models.subject import Subject

    bias, seed, init = model_options(spec)
    root, _ = world_root(bias, seed, cache_dir)
    if not (root / "world.json").is_file():
        return None  # generated on first load
    world = World.at(root)
    return Subject(model=None, tokenizer=None, name=spec.name, data_dir=world.data_dir,
                   source=source_string(bias, seed, init, world.weights))  # fmt: skip


load.light = identity
