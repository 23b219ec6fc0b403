"""The ``ctrldec`` command line.

    ctrldec generate PROMPT [--grammar FILE.lark | --regex RE | --schema FILE.json [--lenient]
                            [--extra-properties forbid|allow] [--max-string-length N] [--max-items N]]
                            [--model PATH] [--max-new-tokens N [--no-budget-aware]] [--temperature T] [--seed S]
                            [--sampler mask|awrs|smc [--particles N] [--ess-threshold R] [--weights estimate|exact]]
                            [--sampler asap --samples K [--batch B] [--oracle FILE]]
                            [--mirostat TAU [--mirostat-eta ETA] [--mirostat-version 1|2]]
                            [--entropy-temperature T_MIN:T_MAX[:EXP]]
                            [--search contrastive [--alpha A] [--top-k K]]
                            [--search beam|diverse-beam [--beams B] [--groups G] [--diversity D] [--length-penalty LP]]
                            [--speculative forced,prompt_lookup,recycling,early_exit [--max-draft N] [--early-exit L]]
                            [--ead THRESHOLD [--ead-layers L] [--ead-window W] [--ead-dwell D]]
    ctrldec info
    ctrldec bench masks [--grammar FILE | --builtin NAME] (--docs FILE.jsonl | --jsonschemabench DIR)
                        [--limit N] [--engines a,b] [--out results.json]
    ctrldec bench fuzz [--budget 10m] [--seed N] [--corpus DIR]
    ctrldec bench memory [--cases long-string,deep-schema,...] [--model PATH]
    ctrldec bench coverage [--suite DIR] [--jsonschemabench DIR] [--limit N] [--engines a,b] [--out F]

Errors are one line on stderr (``ctrldec: error: ...``) with exit status 2; an output cut off by
``--max-new-tokens`` before the constraint is satisfied is printed, flagged on stderr, status 3.
Set ``CTRLDEC_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .errors import CtrldecError

EXIT_ERROR = 2
EXIT_TRUNCATED = 3


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _constraint(args: argparse.Namespace):
    from .constraints import Grammar, JSONSchema, Regex

    if args.grammar:
        return Grammar.from_file(args.grammar)
    if args.regex is not None:
        return Regex(args.regex)
    if args.schema:
        try:
            text = open(args.schema, encoding="utf-8").read()
        except OSError as e:
            raise CtrldecError(f"cannot read schema file {args.schema}: {e.strerror}") from None
        try:
            return JSONSchema(text, whitespace=args.whitespace, property_order=args.property_order, lenient=args.lenient,
                              extra_properties=args.extra_properties, max_string_length=args.max_string_length, max_items=args.max_items)
        except ValueError as e:
            raise CtrldecError(str(e)) from None
    return None


def _controllers(args: argparse.Namespace) -> list[Any]:
    from .controllers import EntropyTemperature, Mirostat

    out: list[Any] = []
    try:
        if args.entropy_temperature:
            parts = args.entropy_temperature.split(":")
            if len(parts) not in (2, 3):
                raise ValueError(f"--entropy-temperature takes T_MIN:T_MAX or T_MIN:T_MAX:EXPONENT, got {args.entropy_temperature!r}")
            out.append(EntropyTemperature(*(float(x) for x in parts)))
        if args.mirostat is not None:
            out.append(Mirostat(args.mirostat, args.mirostat_eta, version=args.mirostat_version))
    except ValueError as e:
        raise CtrldecError(str(e)) from None
    return out


def _search(args: argparse.Namespace, controllers: list[Any]) -> dict[str, Any]:
    """``search=`` for --search and its flags (they are refused without it)."""
    from .search import BeamSearch, ContrastiveSearch, DiverseBeamSearch

    flags = {"--alpha": args.alpha, "--top-k": args.top_k, "--beams": args.beams, "--groups": args.groups,
             "--diversity": args.diversity, "--length-penalty": args.length_penalty}
    if args.search is None:
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise CtrldecError(f"{', '.join(given)} need --search (contrastive, beam or diverse-beam)")
        return {}
    allowed = {"contrastive": ("--alpha", "--top-k"), "beam": ("--beams", "--length-penalty"),
               "diverse-beam": ("--beams", "--groups", "--diversity", "--length-penalty")}[args.search]
    stray = [k for k, v in flags.items() if v is not None and k not in allowed]
    clash = stray + [f for f, on in (("--sampler " + args.sampler, args.sampler != "mask"), ("--temperature", args.temperature is not None),
                                     ("--mirostat / --entropy-temperature", bool(controllers))) if on]
    if clash:
        raise CtrldecError(f"--search {args.search} cannot be combined with {', '.join(clash)}: "
                           f"it takes {', '.join(allowed)}")
    if args.search == "contrastive":
        return {"search": ContrastiveSearch(0.6 if args.alpha is None else args.alpha, 4 if args.top_k is None else args.top_k)}
    lp = 1.0 if args.length_penalty is None else args.length_penalty
    if args.search == "beam":
        return {"search": BeamSearch(4 if args.beams is None else args.beams, lp)}
    return {"search": DiverseBeamSearch(6 if args.beams is None else args.beams, 3 if args.groups is None else args.groups,
                                        0.5 if args.diversity is None else args.diversity, lp)}


def _sampling(args: argparse.Namespace, controllers: list[Any]) -> dict[str, Any]:
    """The loop's sampling options for --sampler, --temperature and the controllers (or --search)."""
    from .samplers import AWRS
    from .search import SMC

    search = _search(args, controllers)
    if search:
        return search

    if args.temperature is not None and args.temperature < 0:
        raise CtrldecError(f"--temperature must be >= 0, got {args.temperature}")
    if args.sampler != "asap" and (args.samples != 1 or args.oracle or args.batch != 1):
        raise CtrldecError("--samples, --batch and --oracle need --sampler asap")
    if args.sampler not in ("awrs", "smc") and args.weights != "estimate":
        raise CtrldecError(f"--weights {args.weights} needs --sampler awrs or smc (the samplers that weigh their draws)")
    if args.sampler == "asap":
        if controllers:
            raise CtrldecError("--sampler asap samples at temperature 1 without controllers (its oracle learns the model's "
                               "own distribution): drop --mirostat / --entropy-temperature")
        return {"sampler": _asap(args)}
    if args.sampler == "mask":
        if args.particles is not None:
            raise CtrldecError("--particles needs --sampler smc")
        greedy = (args.temperature or 0) == 0 and not controllers
        return {"greedy": greedy, "temperature": args.temperature or 1.0, "controllers": controllers}
    if args.temperature == 0:
        raise CtrldecError(f"--sampler {args.sampler} samples: give --temperature > 0 (default 1, the model's own distribution)")
    awrs = AWRS(args.temperature or 1.0, controllers=controllers, weights=args.weights)
    if args.sampler == "awrs":
        if args.particles is not None:
            raise CtrldecError("--particles needs --sampler smc")
        return {"sampler": awrs}
    return {"sampler": SMC(8 if args.particles is None else args.particles, args.ess_threshold, sampler=awrs)}


def _asap(args: argparse.Namespace) -> Any:
    """ASAp over the --oracle file (when it exists) or a new oracle."""
    from .samplers.asap import ASApOracle
    from .search import ASAp

    if args.temperature == 0:
        raise CtrldecError("--sampler asap with --temperature 0: greedy decoding is meaningless with ASAp, which corrects "
                           "the distribution samples are drawn from (there is none in greedy decoding)")
    if args.temperature not in (None, 1):
        raise CtrldecError(f"--sampler asap samples at temperature 1 (its oracle learns the model's own distribution), "
                           f"got --temperature {args.temperature}")
    if args.particles is not None:
        raise CtrldecError("--particles needs --sampler smc")
    if args.samples < 1 or args.batch < 1:
        raise CtrldecError(f"--samples and --batch must be at least 1, got {args.samples} and {args.batch}")
    if args.grammar is None and args.regex is None and args.schema is None:
        raise CtrldecError("--sampler asap needs a constraint (--grammar, --regex or --schema): it samples from "
                           "P(output | output in the constraint's language)")
    oracle = ASApOracle.load(args.oracle) if args.oracle and os.path.exists(args.oracle) else ASApOracle()
    return ASAp(oracle)


def _generate_asap(args: argparse.Namespace, decoder: Any, constraint: Any, asap: Any) -> int:
    """--samples outputs in rounds of --batch, one per line; the oracle saved to --oracle after."""
    truncated = 0
    seed = args.seed if args.seed is not None else 0
    for start in range(0, args.samples, args.batch):
        rows = min(args.batch, args.samples - start)
        results = decoder.generate_batch([args.prompt] * rows, constraint=constraint, max_new_tokens=args.max_new_tokens,
                                         seed=seed + start, chat=not args.no_chat_template, system=args.system,
                                         fast_forward=not args.no_fast_forward, sampler=asap, budget_aware=args.budget_aware)
        for r in results:
            sys.stdout.write(r.text + "\n")
            truncated += r.truncated
        sys.stdout.flush()
    oracle = asap.oracle
    if args.oracle:
        oracle.save(args.oracle)
    print(f"ctrldec: ASAp oracle: {len(oracle)} nodes from {oracle.samples} samples, log P(constraint) <= "
          f"{oracle.log_p_language_bound:.3f}" + (f"; saved to {args.oracle}" if args.oracle else ""), file=sys.stderr)
    if truncated:
        print(f"ctrldec: {truncated} output(s) truncated by --max-new-tokens before the constraint was satisfied",
              file=sys.stderr)
        return EXIT_TRUNCATED
    return 0


def _drafting(args: argparse.Namespace) -> dict[str, Any]:
    """``speculative=`` for --speculative (with --max-draft, --early-exit), else ``fast_forward=``."""
    from .speculative import Speculative

    if args.speculative is None:
        if args.early_exit is not None or args.max_draft is not None:
            raise CtrldecError("--max-draft and --early-exit need --speculative")
        return {"fast_forward": not args.no_fast_forward}
    if args.no_fast_forward:
        raise CtrldecError("--no-fast-forward with --speculative: leave 'forced' out of --speculative instead")
    names = [n.strip() for n in args.speculative.split(",") if n.strip()]
    if "model" in names:
        raise CtrldecError("the 'model' drafter needs a draft model object: use it from Python (Speculative(draft_model=...))")
    return {"speculative": Speculative(names, max_draft=8 if args.max_draft is None else args.max_draft,
                                       early_exit_layers=args.early_exit)}


def _switching(args: argparse.Namespace) -> dict[str, Any]:
    """``ead=`` for --ead THRESHOLD (with --ead-layers, --ead-window, --ead-dwell)."""
    from .ead import EntropySwitch

    if args.ead is None:
        if args.ead_layers is not None or args.ead_window is not None or args.ead_dwell is not None:
            raise CtrldecError("--ead-layers, --ead-window and --ead-dwell need --ead THRESHOLD")
        return {}
    settings = {k: v for k, v in (("layers", args.ead_layers), ("window", args.ead_window), ("min_dwell", args.ead_dwell))
                if v is not None}
    return {"ead": EntropySwitch(threshold=args.ead, **settings)}


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import Decoder, _Options
    from .models import load

    if args.max_new_tokens < 1:
        raise CtrldecError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    sampling = _sampling(args, _controllers(args))
    drafting = _drafting(args) | _switching(args)
    if args.sampler == "asap" and "speculative" in drafting:
        raise CtrldecError("--speculative with --sampler asap: ASAp samples every token itself (drafts are declined)")
    if args.sampler == "asap" and "ead" in drafting:
        raise CtrldecError("--ead with --sampler asap: ASAp's oracle learns one model's distribution, and EAD switches between two")
    constraint = _constraint(args)
    if constraint is not None:
        constraint.tables()  # report grammar errors before the (slower) model load
    if args.sampler != "asap":
        _Options.from_kwargs({**drafting, **sampling})  # and combinations a part refuses
    _quiet_transformers()
    model, tokenizer = load(args.model)
    decoder = Decoder(model, tokenizer)
    if args.sampler == "asap":
        return _generate_asap(args, decoder, constraint, sampling["sampler"])
    stream = decoder.stream(
        args.prompt,
        constraint=constraint,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        chat=not args.no_chat_template,
        system=args.system,
        budget_aware=args.budget_aware,
        **drafting,
        **sampling,
    )
    text = ""
    for delta in stream:
        text += delta
        if args.stream:
            sys.stdout.write(delta)
            sys.stdout.flush()
    result = decoder.last_result
    if result.search is not None:  # every hypothesis, best first, one per line
        for text in result.search.texts[1:] if args.stream else result.search.texts:
            sys.stdout.write(("\n" if args.stream else "") + text + ("" if args.stream else "\n"))
        sys.stdout.write("\n" if args.stream else "")
        print(f"ctrldec: {len(result.search.hypotheses)} hypotheses, scores "
              + " ".join(f"{x:.3f}" for x in result.search.scores), file=sys.stderr)
    elif not args.stream:
        sys.stdout.write(result.text + "\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()
    _notes(result)
    if result.truncated:
        print(
            f"ctrldec: output truncated after {len(result.token_ids)} tokens: not yet a complete match of the "
            "constraint (raise --max-new-tokens)",
            file=sys.stderr,
        )
        return EXIT_TRUNCATED
    return 0


def _notes(result: Any) -> None:
    """What SMC and EAD did, on stderr."""
    if result.smc is not None:
        report = result.smc
        print(f"ctrldec: SMC: {report.complete} of {len(report.particles)} particles complete, log P(constraint) "
              f"estimate {report.log_marginal_likelihood:.3f}, resampled {len(report.resampled)} times", file=sys.stderr)
    if result.models:
        sampled = [m for m, kind in zip(result.models, result.kinds) if kind == "sampled"]
        print(f"ctrldec: EAD: the full model wrote {sampled.count('full')} of {len(sampled)} sampled tokens, "
              f"{int(result.timing.get('ead/switches', 0))} switches", file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata
    import platform

    from . import __version__
    from .models import INSTALL_DEFAULT_MODEL, cache_dir, converted_model_dir, default_model_file
    from .errors import ModelError

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"ctrldec {__version__} (Python {platform.python_version()})")
    for dist in ("torch", "transformers", "lark", "interegular", "numpy", "gguf", "accelerate"):
        print(f"  {dist:<12} {version(dist)}")
    print("peers (optional, for benchmarks):")
    for dist in ("llguidance", "xgrammar", "outlines-core"):
        print(f"  {dist:<12} {version(dist)}")
    print(f"cache: {cache_dir()}")
    try:
        gguf = default_model_file()
    except ModelError:
        print(f"default model: not installed ({INSTALL_DEFAULT_MODEL})")
        return 0
    print(f"default model: {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB)")
    converted = converted_model_dir(gguf)
    if converted is None:
        print("  converted copy: none yet (made on first load, ~25 s)")
    else:
        print(f"  converted copy: {converted}")
    return 0


def _write_report(args: argparse.Namespace, report: dict[str, Any]) -> int:
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.out}")
    return 0


def cmd_bench_masks(args: argparse.Namespace) -> int:
    from .bench import masks
    from .constraints.grammar import builtin_grammar_path

    if args.grammar and args.builtin:
        raise CtrldecError("give --grammar or --builtin, not both")
    path = args.grammar or builtin_grammar_path(args.builtin or "json")
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise CtrldecError(f"cannot read grammar {path}: {e.strerror}") from None
    if bool(args.docs) == bool(args.jsonschemabench):
        raise CtrldecError("give exactly one of --docs FILE.jsonl or --jsonschemabench DIR")
    try:
        if args.docs:
            docs = masks.load_docs(args.docs)
        else:
            docs = [d for _, d in masks.jsonschemabench_docs(args.jsonschemabench)]
    except (OSError, ValueError) as e:
        raise CtrldecError(str(e)) from None
    if args.limit:
        docs = docs[: args.limit]
    _quiet_transformers()
    from .models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    engines = args.engines.split(",") if args.engines else None
    print(f"grammar {path}; tokenizer of {'the default model' if args.model is None else args.model}", flush=True)
    report = masks.run(text, docs, tokenizer, engines=engines, compile_repeats=args.compile_repeats, progress=args.progress)
    report["grammar"] = str(path)
    print(masks.format_table(report))
    return _write_report(args, report)


def cmd_bench_coverage(args: argparse.Namespace) -> int:
    from .bench import coverage

    if not args.suite and not args.jsonschemabench:
        raise CtrldecError("give --suite DIR and/or --jsonschemabench DIR (e.g. ../shared/data/...)")
    _quiet_transformers()
    from .models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    engines = args.engines.split(",") if args.engines else None
    report: dict[str, Any] = {}
    try:
        if args.suite:
            report["suite"] = coverage.run_suite(args.suite, tokenizer, engines=engines, progress=args.progress)
            print(coverage.format_suite(report["suite"]), flush=True)
        if args.jsonschemabench:
            def save(partial: dict) -> None:
                if args.out:
                    with open(args.out, "w", encoding="utf-8") as f:
                        json.dump({**report, "jsonschemabench": partial}, f, indent=1)

            report["jsonschemabench"] = coverage.run_bench(
                args.jsonschemabench, tokenizer, engines=engines, sample=args.limit, seed=args.seed,
                masks=not args.no_masks, progress=args.progress, timeout=args.timeout, model=args.model, partial=save,
            )
            print(coverage.format_bench(report["jsonschemabench"]))
            if args.plot:
                from .bench import plots

                plots.coverage(report["jsonschemabench"], args.plot)
                print(f"wrote {args.plot}")
    except (OSError, ValueError) as e:
        raise CtrldecError(str(e)) from None
    return _write_report(args, report)


def _seconds(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` -> seconds."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:].lower(), None)
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise CtrldecError(f"--budget {text!r}: give seconds, or a number with s, m or h (e.g. 10m)") from None
    if value < 0:
        raise CtrldecError(f"--budget {text!r} is negative")
    return value


def cmd_bench_fuzz(args: argparse.Namespace) -> int:
    from .bench import fuzz

    budget = _seconds(args.budget)
    tokenizer = None
    if not args.no_tokens:
        _quiet_transformers()
        from .models import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    report = fuzz.run(budget, tokenizer, seed=args.seed, progress=args.progress or sys.stderr.isatty())
    print(fuzz.format_report(report))
    if args.corpus and report["disagreements"]:
        path = fuzz.save_cases(report["disagreements"], args.corpus)
        print(f"kept {len(report['disagreements'])} case(s) in {path}")
    _write_report(args, report)
    return 1 if report["disagreements"] else 0


def cmd_bench_memory(args: argparse.Namespace) -> int:
    from .bench import memory

    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    try:
        report = memory.run(cases, args.model)
    except ValueError as e:
        raise CtrldecError(str(e)) from None
    print(memory.format_report(report))
    _write_report(args, report)
    return 0 if report["ok"] else 1


def _model_bench(args: argparse.Namespace, run: Any, describe: Any) -> int:
    """Load the model, ``report = run(model, tokenizer)``, print ``describe(report)``, write --out."""
    from .models import load

    _quiet_transformers()
    model, tokenizer = load(args.model)
    try:
        report = run(model, tokenizer)
    except (OSError, ValueError) as e:
        raise CtrldecError(str(e)) from None
    print(describe(report))
    return _write_report(args, report)


def cmd_bench_generate(args: argparse.Namespace) -> int:
    from .bench import generation

    return _model_bench(args, lambda model, tokenizer: generation.run(
        model, tokenizer, args.jsonschemabench, splits=args.splits.split(","), limit=args.limit, seed=args.seed,
        max_new_tokens=args.max_new_tokens, configs=args.configs.split(",") if args.configs else None,
        progress=args.progress), generation.format_report)


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    from .bench import e2e, plots

    def go(model: Any, tokenizer: Any) -> dict[str, Any]:
        report = e2e.run(model, tokenizer, args.jsonschemabench, splits=args.splits.split(","), limit=args.limit,
                         seed=args.seed, max_new_tokens=args.max_new_tokens,
                         configs=args.configs.split(",") if args.configs else None, progress=args.progress,
                         free_text=args.free_text, early_exit=args.early_exit)
        if args.plot:
            plots.speed(report, e2e.LABELS, args.plot)
            print(f"wrote {args.plot}")
        return report

    return _model_bench(args, go, e2e.format_report)


def cmd_bench_early_exit(args: argparse.Namespace) -> int:
    from .bench import e2e

    layers = _int_list(args.layers, "--layers")
    return _model_bench(args, lambda model, tokenizer: e2e.early_exit_sweep(
        model, tokenizer, args.free_text, layers, prompts=args.prompts, max_new_tokens=args.max_new_tokens), e2e.format_sweep)


def cmd_bench_ead(args: argparse.Namespace) -> int:
    from .bench import ead

    try:
        thresholds = [float(x) for x in args.thresholds.split(",") if x]
    except ValueError:
        raise CtrldecError(f"--thresholds takes comma-separated numbers, got {args.thresholds!r}") from None

    def go(model: Any, tokenizer: Any) -> dict[str, Any]:
        report = ead.run(model, tokenizer, free_text=args.free_text, jsonschemabench=args.jsonschemabench,
                         thresholds=thresholds, layers=args.layers, window=args.window, min_dwell=args.min_dwell,
                         limit=args.limit, splits=args.splits.split(","), max_new_tokens=args.max_new_tokens,
                         seed=args.seed, progress=args.progress)
        if args.plot:
            ead.plot(report, args.plot)
            print(f"wrote {args.plot}")
        return report

    return _model_bench(args, go, ead.format_report)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise CtrldecError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise CtrldecError(f"{flag} takes positive layer counts, got {text!r}")
    return values


def cmd_bench_mirostat(args: argparse.Namespace) -> int:
    from .bench import mirostat

    try:
        taus = [float(x) for x in args.taus.split(",")]
    except ValueError:
        raise CtrldecError(f"--taus takes comma-separated numbers, got {args.taus!r}") from None
    if args.grammar and not os.path.exists(args.grammar):
        from .constraints.grammar import builtin_grammar_path

        args.grammar = str(builtin_grammar_path(args.grammar))
    args.regex, args.whitespace, args.property_order, args.lenient = None, "compact", "schema", False
    args.extra_properties, args.max_string_length, args.max_items = "allow", None, None  # the schema's own language
    constraint = _constraint(args)
    return _model_bench(args, lambda model, tokenizer: mirostat.run(
        model, tokenizer, taus=taus, version=args.version, eta=args.eta, prompts=args.prompts,
        max_new_tokens=args.max_new_tokens, seed=args.seed, surprise=args.surprise, constraint=constraint,
        progress=args.progress), mirostat.format_report)


def cmd_bench_fidelity(args: argparse.Namespace) -> int:
    from .bench import fidelity

    try:
        particles = [int(x) for x in args.particles.split(",") if x]
    except ValueError:
        raise CtrldecError(f"--particles takes comma-separated integers, got {args.particles!r}") from None
    try:
        asap_samples = [int(x) for x in args.asap_samples.split(",") if x]
    except ValueError:
        raise CtrldecError(f"--asap-samples takes comma-separated integers, got {args.asap_samples!r}") from None
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(fidelity.METHODS))
    if unknown:
        raise CtrldecError(f"unknown method(s) {', '.join(unknown)} in --methods; the bench has: {', '.join(fidelity.METHODS)}")
    cases = fidelity.pick_cases(args.constraints.split(",")) if args.constraints else None

    def go(model: Any, tokenizer: Any) -> dict[str, Any]:
        report = fidelity.run(model, tokenizer, samples=args.samples, particles=particles, cases=cases, seed=args.seed,
                              progress=args.progress, methods=methods, asap_samples=asap_samples,
                              asap_batch=args.asap_batch)
        if args.plot:
            fidelity.plot(report, args.plot)
            print(f"wrote {args.plot}")
        return report

    return _model_bench(args, go, fidelity.format_report)


def cmd_bench_search(args: argparse.Namespace) -> int:
    from .bench import search

    strategies = args.strategies.split(",") if args.strategies else search.STRATEGIES
    return _model_bench(args, lambda model, tokenizer: search.run(
        model, tokenizer, args.jsonschemabench, splits=args.splits.split(","), limit=args.limit, prompts=args.prompts,
        seed=args.seed, max_new_tokens=args.max_new_tokens, strategies=strategies, progress=args.progress,
    ), search.format_report)


def cmd_bench_asap(args: argparse.Namespace) -> int:
    from .bench import asap

    cases = args.constraints.split(",") if args.constraints else None
    if cases:
        from .bench.fidelity import pick_cases

        pick_cases(cases)  # unknown names fail before the model loads
    return _model_bench(args, lambda model, tokenizer: asap.run(
        model, tokenizer, samples=args.samples, rounds=args.rounds, batch=args.batch, cases=cases, seed=args.seed,
        max_new_tokens=args.max_new_tokens, progress=args.progress), asap.format_report)


def _schema_generation_args(p: argparse.ArgumentParser, *, limit: int, max_new_tokens: int) -> None:
    p.add_argument("--jsonschemabench", metavar="DIR", required=True)
    p.add_argument("--splits", default="Glaiveai2K,Github_easy")
    p.add_argument("--limit", type=int, default=limit)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--model", metavar="PATH")
    p.add_argument("--out", metavar="results.json")
    p.add_argument("--progress", action="store_true")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctrldec", description="Constrained and controlled decoding for Hugging Face models.")
    sub = p.add_subparsers(dest="command", required=True)
    _generate_parser(sub.add_parser("generate", help="generate text (constrained if a grammar or regex is given)"))
    i = sub.add_parser("info", help="versions, the default model and the cache")
    i.set_defaults(func=cmd_info)
    bsub = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    _engine_bench_parsers(bsub)
    _fuzz_parser(bsub)
    _model_bench_parsers(bsub)
    return p


def _ead_args(g: argparse.ArgumentParser) -> None:
    g.add_argument("--ead", type=float, metavar="THRESHOLD", help="entropy-adaptive decoding: the model's first layers write "
                                                                  "while the rolling entropy (nats) stays below THRESHOLD")
    g.add_argument("--ead-layers", type=int, metavar="L", help="with --ead: layers of the small model (default: a quarter)")
    g.add_argument("--ead-window", type=int, metavar="W", help="with --ead: passes the entropy is averaged over (5)")
    g.add_argument("--ead-dwell", type=int, metavar="D", help="with --ead: passes the full model writes at least (4)")


def _generate_parser(g: argparse.ArgumentParser) -> None:
    g.add_argument("prompt")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--grammar", metavar="FILE.lark", help="a Lark grammar the output must match")
    which.add_argument("--regex", metavar="RE", help="a regular expression the output must match in full")
    which.add_argument("--schema", metavar="FILE.json", help="a JSON Schema the output must validate against")
    g.add_argument("--lenient", action="store_true", help="with --schema: relax what cannot be enforced exactly (warns)")
    g.add_argument("--property-order", choices=["schema", "any"], default="schema", help="with --schema")
    g.add_argument("--whitespace", default="compact", help="with --schema: compact, flexible, or a regex")
    g.add_argument("--extra-properties", choices=["forbid", "allow"], default="forbid",
                   help="with --schema: forbid (default): objects that leave extra keys open get only the keys they name; "
                        "allow: any extra key, as the spec says")
    g.add_argument("--max-string-length", type=int, metavar="N", help="with --schema: at most N characters in a string with no maxLength")
    g.add_argument("--max-items", type=int, metavar="N", help="with --schema: at most N items in an array with no maxItems")
    g.add_argument("--no-budget-aware", dest="budget_aware", action="store_const", const=False, default=None,
                   help="with a constraint: do not keep the output completable within --max-new-tokens (the default "
                        "allows only tokens after which a complete output still fits; this cuts it off as a prefix instead)")
    g.add_argument("--system", metavar="TEXT", help="a system message (chat models)")
    g.add_argument("--stream", action="store_true", help="print the output as it is produced")
    g.add_argument("--no-fast-forward", action="store_true", help="sample every token, even those the constraint fixes")
    g.add_argument("--speculative", metavar="NAMES", help="drafters, in order, comma-separated: forced, prompt_lookup, "
                                                           "recycling, early_exit (default: forced,prompt_lookup)")
    g.add_argument("--max-draft", type=int, metavar="N", help="with --speculative: the longest draft (γ, default 8)")
    g.add_argument("--early-exit", type=int, metavar="L", help="with --speculative early_exit: layers of the self-draft")
    _ead_args(g)
    g.add_argument("--model", metavar="PATH", help="a local HF model folder or .gguf file (default: the embedded SmolLM2-135M)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, help="0 = greedy (the default with --sampler mask; 1 with awrs and smc)")
    g.add_argument("--sampler", choices=["mask", "awrs", "smc", "asap"], default="mask",
                   help="mask: exact sampling of the masked distribution (default); awrs: adaptive weighted rejection "
                        "sampling; smc: sequential Monte Carlo over AWRS particles, outputs distributed as P(output | constraint); "
                        "asap: grammar-aligned sampling, converging to P(output | constraint) over --samples outputs")
    g.add_argument("--samples", type=int, default=1, metavar="K", help="with --sampler asap: print K outputs, one per line")
    g.add_argument("--batch", type=int, default=1, metavar="B",
                   help="with --sampler asap: B samples per round (one batched pass per step; the oracle learns after each round)")
    g.add_argument("--oracle", metavar="FILE",
                   help="with --sampler asap: the oracle file to start from (when it exists) and to save to (.npz)")
    g.add_argument("--particles", type=int, metavar="N", help="with --sampler smc: how many particles (default 8)")
    g.add_argument("--weights", choices=["estimate", "exact"], default="estimate",
                   help="with --sampler awrs or smc: each step's weight, AWRS's estimate of the allowed mass from its checks "
                        "(default) or the exact mass from the full mask (fewer particles for the same fidelity)")
    g.add_argument("--ess-threshold", type=float, default=0.5, metavar="R",
                   help="with --sampler smc: resample when the effective sample size falls below R * particles")
    g.add_argument("--seed", type=int)
    g.add_argument("--mirostat", type=float, metavar="TAU", help="Mirostat: hold the surprise at TAU bits per token (implies sampling)")
    g.add_argument("--mirostat-eta", type=float, default=1.0, metavar="ETA", help="Mirostat's learning rate (default 1.0)")
    g.add_argument("--mirostat-version", type=int, choices=[1, 2], default=2)
    g.add_argument("--entropy-temperature", metavar="T_MIN:T_MAX[:EXP]",
                   help="temperature from the normalized entropy of each step's distribution (implies sampling)")
    g.add_argument("--search", choices=["contrastive", "beam", "diverse-beam"],
                   help="decide tokens by a search instead of sampling: contrastive search, beam search, or diverse "
                        "beam search (beam searches print every hypothesis, best first, one per line)")
    g.add_argument("--alpha", type=float, help="with --search contrastive: degeneration penalty weight in [0, 1] (0.6)")
    g.add_argument("--top-k", type=int, help="with --search contrastive: candidates per step (4)")
    g.add_argument("--beams", type=int, help="with --search beam (4) or diverse-beam (6): beams, and hypotheses printed")
    g.add_argument("--groups", type=int, help="with --search diverse-beam: groups (3); must divide --beams")
    g.add_argument("--diversity", type=float, help="with --search diverse-beam: Hamming diversity penalty > 0 (0.5)")
    g.add_argument("--length-penalty", type=float, help="with a beam search: rank by score / length ** LP (1.0)")
    g.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    g.set_defaults(func=cmd_generate)


def _engine_bench_parsers(bsub: Any) -> None:
    """Benchmarks of the grammar engine and the JSON Schema compiler (no model runs)."""
    m = bsub.add_parser("masks", help="mask and accepts latency, compile time and correctness, side by side with peers")
    m.add_argument("--grammar", metavar="FILE.lark")
    m.add_argument("--builtin", metavar="NAME", help="a grammar from grammars/ (default: json)")
    m.add_argument("--docs", metavar="FILE.jsonl", help="documents: one JSON string (or {'text': ...}) per line")
    m.add_argument("--jsonschemabench", metavar="DIR", help="the valid instances of a JSONSchemaBench data folder")
    m.add_argument("--limit", type=int, help="at most N documents")
    m.add_argument("--engines", help="comma-separated: ctrldec,llguidance,xgrammar (default: all installed)")
    m.add_argument("--model", metavar="PATH", help="whose tokenizer to use (default: the embedded model's)")
    m.add_argument("--compile-repeats", type=int, default=10)
    m.add_argument("--out", metavar="results.json")
    m.add_argument("--progress", action="store_true")
    m.set_defaults(func=cmd_bench_masks)
    c = bsub.add_parser("coverage", help="JSON Schema coverage (test suite, JSONSchemaBench), side by side with peers")
    c.add_argument("--suite", metavar="DIR", help="JSON-Schema-Test-Suite tests/draft2020-12 folder")
    c.add_argument("--jsonschemabench", metavar="DIR", help="JSONSchemaBench data folder (*.jsonl)")
    c.add_argument("--limit", type=int, help="a seeded random sample of N schemas")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--engines", help="comma-separated: ctrldec,llguidance,xgrammar,outlines-core (default: all installed)")
    c.add_argument("--model", metavar="PATH", help="whose tokenizer to use (default: the embedded model's)")
    c.add_argument("--no-masks", action="store_true", help="skip mask timing")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds per schema and engine (JSONSchemaBench: 10)")
    c.add_argument("--out", metavar="results.json")
    c.add_argument("--plot", metavar="F.png", help="JSONSchemaBench: passing schemas per split, per engine")
    c.add_argument("--progress", action="store_true")
    c.set_defaults(func=cmd_bench_coverage)


def _fuzz_parser(bsub: Any) -> None:
    f = bsub.add_parser("fuzz", help="differential fuzzing against jsonschema and Lark (exit 1 if they disagree)")
    f.add_argument("--budget", default="2m", help="how long: seconds, or 30s / 10m / 1h (default 2m)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--model", metavar="PATH", help="whose tokenizer replays texts and probes masks (default: the embedded model's)")
    f.add_argument("--no-tokens", action="store_true", help="verdicts only: no token replays or mask probes")
    f.add_argument("--corpus", metavar="DIR", help="append every disagreement to DIR/found.jsonl (regression cases)")
    f.add_argument("--out", metavar="results.json")
    f.add_argument("--progress", action="store_true", help="a progress bar (on by default on a terminal)")
    f.set_defaults(func=cmd_bench_fuzz)
    m = bsub.add_parser("memory", help="peak memory of long strings, deep and huge schemas, big grammars (exit 1 past a bound)")
    m.add_argument("--cases", help="comma-separated subset of long-string,long-pattern,deep-schema,big-schema,big-grammar")
    m.add_argument("--model", metavar="PATH", help="whose tokenizer generates the long strings (default: the embedded model's)")
    m.add_argument("--out", metavar="results.json")
    m.set_defaults(func=cmd_bench_memory)


def _generation_bench_parsers(bsub: Any) -> None:
    """``bench generate``, ``bench e2e`` and ``bench early-exit``."""
    gen = bsub.add_parser("generate", help="generate JSON for JSONSchemaBench schemas with a model and validate it")
    _schema_generation_args(gen, limit=30, max_new_tokens=512)
    gen.add_argument("--configs", help="comma-separated subset of ctrldec,ctrldec-nobudget,ctrldec-allow,ctrldec-allow-nobudget,"
                                       "xgrammar,llguidance (default: all)")
    gen.set_defaults(func=cmd_bench_generate)
    e = bsub.add_parser("e2e", help="structured generation speed: HF generate (+ processors) vs ctrldec's loop")
    _schema_generation_args(e, limit=20, max_new_tokens=128)
    e.add_argument("--configs", help="comma-separated subset of a,b,c,d,d0,s,d4,w,m8,ap,ae,cp,ce,x0,xl,xr,xe,xa,xn, "
                                     "or cb,dn (budget-aware processor, loop without it; only when named)")
    e.add_argument("--free-text", metavar="DIR", help="quality-task folder (../shared/data/quality_tasks): also run the "
                                                      "unconstrained rows on 20 free-text prompts")
    e.add_argument("--early-exit", type=int, metavar="L", help="layers of the early-exit drafters, ours and transformers' "
                                                                "(default: an eighth of the model's)")
    e.add_argument("--plot", metavar="F.png", help="tokens/s per configuration, schemas and free text")
    e.set_defaults(func=cmd_bench_e2e)
    ee = bsub.add_parser("early-exit", help="calibrate the early-exit self-draft: tokens/s and drafts kept per depth L")
    ee.add_argument("--free-text", metavar="DIR", required=True, help="quality-task folder (../shared/data/quality_tasks)")
    ee.add_argument("--layers", default="4,8,12,16,20", help="depths to try (default 4,8,12,16,20)")
    ee.add_argument("--prompts", type=int, default=6)
    ee.add_argument("--max-new-tokens", type=int, default=64)
    ee.add_argument("--model", metavar="PATH")
    ee.add_argument("--out", metavar="FILE.json")
    ee.set_defaults(func=cmd_bench_early_exit)


def _ead_bench_parser(bsub: Any) -> None:
    ea = bsub.add_parser("ead", help="entropy-adaptive decoding: full-model share, tokens/s and quality per threshold")
    ea.add_argument("--free-text", metavar="DIR", help="quality-task folder (../shared/data/quality_tasks)")
    ea.add_argument("--jsonschemabench", metavar="DIR", help="JSONSchemaBench data folder")
    ea.add_argument("--splits", default="Glaiveai2K,Github_easy")
    ea.add_argument("--limit", type=int, default=20, help="prompts per set (free text: at most 20)")
    ea.add_argument("--thresholds", default="0,0.75,1,1.25,1.5,2", help="comma-separated entropies (nats) to sweep")
    ea.add_argument("--layers", type=int, metavar="L", help="the small model: the first L layers (default: a quarter)")
    ea.add_argument("--window", type=int, default=5)
    ea.add_argument("--min-dwell", type=int, default=4)
    ea.add_argument("--max-new-tokens", type=int, default=64)
    ea.add_argument("--seed", type=int, default=0)
    ea.add_argument("--model", metavar="PATH")
    ea.add_argument("--out", metavar="results.json")
    ea.add_argument("--plot", metavar="F.png", help="speed-up and log-likelihood gap against the threshold")
    ea.add_argument("--progress", action="store_true")
    ea.set_defaults(func=cmd_bench_ead)


def _model_bench_parsers(bsub: Any) -> None:
    """Benchmarks that run a model."""
    _generation_bench_parsers(bsub)
    _ead_bench_parser(bsub)
    se = bsub.add_parser("search", help="greedy, contrastive, beam, diverse beam and sampling: distinct outputs, "
                                        "self-BLEU, validity, likelihood, speed")
    se.add_argument("--jsonschemabench", metavar="DIR", help="JSONSchemaBench data folder (without it: free text only)")
    se.add_argument("--splits", default="Glaiveai2K,Github_easy")
    se.add_argument("--limit", type=int, default=20, help="schemas")
    se.add_argument("--prompts", type=int, default=20, help="free-text prompts (at most 20)")
    se.add_argument("--strategies", help="comma-separated subset of greedy,greedy-plain,contrastive,beam,beam-tf,diverse-beam,sample")
    se.add_argument("--max-new-tokens", type=int, default=128)
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--model", metavar="PATH")
    se.add_argument("--out", metavar="results.json")
    se.add_argument("--progress", action="store_true")
    se.set_defaults(func=cmd_bench_search)
    mi = bsub.add_parser("mirostat", help="Mirostat's observed surprise against tau on a model")
    mi.add_argument("--taus", default="2,3,4", help="comma-separated targets in bits")
    mi.add_argument("--version", type=int, choices=[1, 2], default=2)
    mi.add_argument("--eta", type=float, default=1.0)
    mi.add_argument("--surprise", choices=["original", "truncated"], default="original")
    mi.add_argument("--prompts", type=int, default=10)
    mi.add_argument("--max-new-tokens", type=int, default=200)
    which = mi.add_mutually_exclusive_group()
    which.add_argument("--grammar", metavar="FILE.lark|NAME", help="constrain with a grammar (a file or a shipped name, e.g. json_compact)")
    which.add_argument("--schema", metavar="FILE.json", help="constrain with a JSON Schema (compact whitespace)")
    mi.add_argument("--seed", type=int, default=0)
    mi.add_argument("--model", metavar="PATH")
    mi.add_argument("--out", metavar="results.json")
    mi.add_argument("--progress", action="store_true")
    mi.set_defaults(func=cmd_bench_mirostat)
    fi = bsub.add_parser("fidelity", help="how far masking, AWRS and SMC are from the exact P(w | L), on enumerable constraints")
    fi.add_argument("--samples", type=int, default=10_000, help="outputs per sampled method (SMC: particles over all runs)")
    fi.add_argument("--particles", default="4,16,64", help="comma-separated SMC particle counts")
    fi.add_argument("--constraints", help="comma-separated subset of binary,json,words,yesno (default: all)")
    fi.add_argument("--seed", type=int, default=0)
    fi.add_argument("--model", metavar="PATH")
    fi.add_argument("--out", metavar="results.json")
    fi.add_argument("--plot", metavar="F.png", help="KL against particles, and the biased constraint's outputs side by side")
    fi.add_argument("--methods", default="masking,awrs,smc,smc-exact,is,asap",
                    help="comma-separated subset of masking,awrs,smc,smc-exact (SMC weighted by the exact allowed mass),"
                         "is (importance sampling from masking's exact distribution: SMC's reference),asap")
    fi.add_argument("--asap-samples", default="10,100,1000,10000",
                    help="ASAp's curve: comma-separated sample counts at which its exact distribution is measured ('' for none)")
    fi.add_argument("--asap-batch", type=int, default=8, help="samples per round of ASAp's batched schedule")
    fi.add_argument("--progress", action="store_true")
    fi.set_defaults(func=cmd_bench_fidelity)
    ab = bsub.add_parser("asap", help="ASAp's per-token overhead over masked sampling, and B=8 rounds against B=1, on a real model")
    ab.add_argument("--samples", type=int, default=20, help="outputs per method, one per call")
    ab.add_argument("--rounds", type=int, default=5)
    ab.add_argument("--batch", type=int, default=8)
    ab.add_argument("--constraints", help="comma-separated subset of binary,json,words,yesno (default: all)")
    ab.add_argument("--max-new-tokens", type=int, default=64)
    ab.add_argument("--seed", type=int, default=0)
    ab.add_argument("--model", metavar="PATH")
    ab.add_argument("--out", metavar="results.json")
    ab.add_argument("--progress", action="store_true")
    ab.set_defaults(func=cmd_bench_asap)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except CtrldecError as e:
        print(f"ctrldec: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ctrldec: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("CTRLDEC_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"ctrldec: internal error: {type(e).__name__}: {first} (set CTRLDEC_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
