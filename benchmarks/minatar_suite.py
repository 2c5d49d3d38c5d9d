"""
Learning from pixels where memory matters (issue 16): MinAtar's games with the motion channels removed or the
frames flickering, RecurrentDQN on single frames against DQN with and without a 4-frame stack and RecurrentPPO.

Two phases, each resumable (every finished run is written at once to ``<out-dir>/run_results/`` and skipped on a
restart, so they can span several sittings; two single-thread runs at a time):

1. ``--screen`` (before any RecurrentDQN run): DQN on one frame against DQN on a 4-frame stack, seeds 0 and 1,
   150k steps, on every candidate variant (``VARIANTS``: ``MinAtar/<Game>-NoMotion-v1`` and
   ``MinAtar/<Game>-Flicker-v1`` for the five games). A variant qualifies when the stack's mean final score beats
   the single frame's by at least 20 % (and by more than 0.1 in absolute terms, so that two near-zero scores do not
   qualify). Results under ``<out-dir>/screen/``. Each game counts once: of a game's qualifying variants, the one
   where the stack's advantage (stack / single) is largest is chosen (``one_per_game``, printed under the screen's
   table) and then written into ``CHOSEN``.
2. The comparison, on ``CHOSEN`` (at least 3 games): ``drqn`` (the variant's ``drqn.yml`` entry: single frames,
   MinAtar's CNN), ``dqn`` and ``dqn_stack4`` (SB3 DQN with the same settings, CNN and learning steps per update:
   ``batch_size x sequence_length`` transitions, a dense layer as wide as the LSTM), ``ppo_lstm``
   (sb3-contrib RecurrentPPO with the zoo's ``atari`` entry on single frames with MinAtar's CNN: one generic
   setting), seeds 0-2, 300k steps (6 % of MinAtar's 5M-frame protocol). ``--algos drqn_norm`` adds drqn with
   ``normalize_features=True`` (not run by default), to decide that option's default for ``CnnLstmPolicy``.

Each phase's table, JSON and plot show every finished run in its folder, whichever agents the call ran (a later
``--algos drqn_norm`` call adds its column to the comparison's), agents in ``AGENTS``' order, then the optional ones.

Every run: MinAtar's sticky actions (0.1) in training and evaluation, episodes capped at 10,000 steps, 20
evaluation episodes every 25k steps (deterministic, as the suite's other benchmarks; MinAtar's stickiness keeps
the episodes varied).

(Named ``minatar_suite.py``: a script named ``minatar.py`` would shadow the ``minatar`` package.)

Usage::

    python benchmarks/minatar_suite.py --screen              # phase 1 (40 runs)
    python benchmarks/minatar_suite.py                       # phase 2 on CHOSEN
    python benchmarks/minatar_suite.py --screen --summary-only
"""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import harness
import yaml

from sb3_drqn.common.envs import MINATAR_GAMES, register_minatar_envs

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "results" / "minatar"
VARIANTS = tuple(f"{game}-{kind}" for kind in ("NoMotion", "Flicker") for game in MINATAR_GAMES)
# The variants the screen chose, one per game (benchmarks/results/minatar/screen/minatar_screen.md: DQN's final
# score, 4-frame stack / single frame, seeds 0-1, 150k steps: Freeway-NoMotion 41.67 / 22.88, Breakout-Flicker
# 3.90 / 1.38, SpaceInvaders-Flicker 14.88 / 5.50; Breakout-NoMotion also qualified, 11.10 / 5.53, but Breakout's
# Flicker variant gains more)
CHOSEN: tuple[str, ...] = ("Freeway-NoMotion", "Breakout-Flicker", "SpaceInvaders-Flicker")
AGENTS = ("drqn", "dqn", "dqn_stack4", "ppo_lstm")
# Run only when asked (--algos): drqn with a LayerNorm on the CNN's features before the LSTM, to decide whether
# ``normalize_features`` should be ``CnnLstmPolicy``'s default (it made CartPole from pixels learn)
OPTIONAL_AGENTS = ("drqn_norm",)
MAX_EPISODE_STEPS = 10_000
QUALIFY_RATIO, QUALIFY_MARGIN = 1.2, 0.1
SMALL_CNN = "__import__('sb3_drqn.common.torch_layers', fromlist=['_']).SmallFrameCNN"


def agent_settings(agent: str, variant: str, overrides: dict[str, Any]) -> harness.Settings:
    """:return: The settings of ``agent`` on ``variant`` (``overrides`` apply to drqn and the DQNs matched to it)"""
    if agent == "ppo_lstm":
        raw = yaml.safe_load(harness.hyperparams_file("ppo_lstm").read_text())["atari"]
        raw = {key: value for key, value in raw.items() if key not in ("env_wrapper", "frame_stack")}
        raw["policy_kwargs"] = f"dict(enable_critic_lstm=False, lstm_hidden_size=128, features_extractor_class={SMALL_CNN})"
        return harness.convert("ppo_lstm", raw, "ppo_lstm.yml:atari, single frames, MinAtar's CNN")
    drqn = harness.load_settings("drqn", f"MinAtar/{variant}-v1", overrides)
    if agent == "drqn":
        return drqn
    if agent == "drqn_norm":
        policy_kwargs = drqn.raw["policy_kwargs"]
        if not policy_kwargs.startswith("dict(") or "normalize_features" in policy_kwargs:
            raise ValueError(
                f"drqn_norm adds normalize_features=True to a policy_kwargs 'dict(...)' without it, got {policy_kwargs!r}"
            )
        raw = {**drqn.raw, "policy_kwargs": policy_kwargs.replace("dict(", "dict(normalize_features=True, ", 1)}
        return harness.convert("drqn", raw, f"{drqn.source} with normalize_features=True")
    dqn = harness.matched_dqn_settings(drqn, policy="CnnPolicy")
    return harness.convert("dqn", {**dqn.raw, "frame_stack": 4}, dqn.source) if agent == "dqn_stack4" else dqn


def qualifying(summary: dict[str, dict[str, Any]]) -> list[str]:
    """:return: The screened variants where the 4-frame stack beats the single frame by the margins"""
    chosen = []
    for variant, agents in summary.items():
        single, stack = agents["dqn"]["final_mean"], agents["dqn_stack4"]["final_mean"]
        if stack >= QUALIFY_RATIO * single and stack - single > QUALIFY_MARGIN:
            chosen.append(variant)
    return chosen


def one_per_game(summary: dict[str, dict[str, Any]]) -> list[str]:
    """:return: For each game with a qualifying variant, the one where the stack beats the single frame by the
    largest factor, in ``VARIANTS``' order"""
    best: dict[str, tuple[float, str]] = {}
    for variant in qualifying(summary):
        single, stack = summary[variant]["dqn"]["final_mean"], summary[variant]["dqn_stack4"]["final_mean"]
        ratio = stack / single if single > 0 else float("inf")
        game = variant.split("-")[0]
        if game not in best or ratio > best[game][0]:
            best[game] = (ratio, variant)
    chosen = {variant for _, variant in best.values()}
    order = [*VARIANTS, *(variant for variant in summary if variant not in VARIANTS)]
    return [variant for variant in order if variant in chosen]


def screen_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| variant | DQN, 1 frame | DQN, 4-frame stack | stack / single | qualifies |", "|---|---|---|---|---|"]
    chosen = set(qualifying(summary))
    for variant, agents in summary.items():
        single, stack = agents["dqn"], agents["dqn_stack4"]
        ratio = stack["final_mean"] / single["final_mean"] if single["final_mean"] > 0 else float("inf")
        lines.append(
            f"| {variant} | {single['final_mean']:.2f} ± {single['final_std']:.2f} | "
            f"{stack['final_mean']:.2f} ± {stack['final_std']:.2f} | {ratio:.2f} | {'yes' if variant in chosen else 'no'} |"
        )
    return "\n".join(lines)


def comparison_table(summary: dict[str, dict[str, Any]], agents: list[str]) -> str:
    """Per game and agent: the final score's mean ± std over seeds, its IQM's 95% bootstrap interval and each seed's,
    then each agent's mean wall time per run (scores are not normalised: no aggregate over games)."""
    lines = ["| game | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    for variant, by_agent in summary.items():
        cells = []
        for agent in agents:
            s = by_agent.get(agent)
            if s is None:
                cells.append("-")
                continue
            low, high = s["final_ci"]
            per_seed = ", ".join(f"{v:.2f}" for v in s["final_per_seed"])
            cells.append(f"{s['final_mean']:.2f} ± {s['final_std']:.2f} [{low:.2f}, {high:.2f}] ({per_seed})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    times = {
        agent: [by_agent[agent]["mean_wall_time"] for by_agent in summary.values() if agent in by_agent] for agent in agents
    }
    lines.append(
        "| wall time per run (s) | " + " | ".join(f"{sum(t) / len(t):.0f}" if t else "-" for t in times.values()) + " |"
    )
    return "\n".join(lines)


def goal_checks(summary: dict[str, dict[str, Any]], agent: str = "drqn") -> list[str]:
    """The issue's goals for ``agent`` (mean final score over seeds): above DQN on one frame on every game, and at
    least level with DQN on a 4-frame stack; a game missing either agent is named as not yet decided."""
    lines = []
    for other, relation, label in (
        ("dqn", "above", "above DQN, 1 frame"),
        ("dqn_stack4", "level", "level with DQN, 4 frames"),
    ):
        misses, undecided = [], []
        for variant, by_agent in summary.items():
            if agent not in by_agent or other not in by_agent:
                undecided.append(variant)
                continue
            mine, theirs = by_agent[agent]["final_mean"], by_agent[other]["final_mean"]
            if mine < theirs or (relation == "above" and mine == theirs):
                misses.append(f"{variant} ({mine:.2f} against {theirs:.2f})")
        compared = len(summary) - len(undecided)
        if misses:
            verdict = "no, not on " + ", ".join(misses)
        else:
            verdict = f"yes on {compared} of {len(summary)} games" if compared else "not decided"
        pending = f" (not yet run: {', '.join(undecided)})" if undecided else ""
        lines.append(f"- {agent} {label} on every game: {verdict}{pending}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = harness.make_parser(
        __doc__, OUT_DIR, AGENTS + OPTIONAL_AGENTS, timesteps=300_000, seeds=[0, 1, 2], eval_freq=25_000, eval_episodes=20,
        n_procs=2, algos=list(AGENTS), plot="minatar.png", script=__file__,
    )  # fmt: skip
    parser.add_argument("--screen", action="store_true", help="phase 1: DQN 1 frame vs 4 frames, seeds 0 1, 150k steps")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, help="variants (default: all or CHOSEN)")
    given = sys.argv[1:] if argv is None else argv
    if "--screen" in given:
        parser.set_defaults(seeds=[0, 1], timesteps=150_000, algos=["dqn", "dqn_stack4"])
    args = harness.parse_args(parser, argv)
    register_minatar_envs()
    variants = args.variants or (list(VARIANTS) if args.screen else list(CHOSEN))
    if not variants:
        parser.error("no variant chosen yet: run --screen first, then fill CHOSEN from its results (or pass --variants)")
    out_dir = args.out_dir / "screen" if args.screen else args.out_dir
    # One order for running and showing: AGENTS', then the optional ones
    order = (*AGENTS, *OPTIONAL_AGENTS)
    agents = [agent for agent in order if agent in args.algos]
    if not args.summary_only:

        def run(variant: str, agent: str, seed: int) -> harness.Run:
            settings = agent_settings(agent, variant, args.hyperparams)
            env_kwargs = dict(max_episode_steps=MAX_EPISODE_STEPS)
            return harness.Run(variant, agent, seed, f"MinAtar/{variant}-v1", settings, args.timesteps, args.eval_freq,
                               args.eval_episodes, env_kwargs=env_kwargs, device=args.device)  # fmt: skip

        runs = [run(variant, agent, seed) for seed in args.seeds for variant in variants for agent in agents]
        harness.run_all(runs, out_dir, args.n_procs)
    # The summary is the folder's: every finished run, whichever agents this call ran (the suite's phases and
    # optional agents span several calls)
    results = harness.finished_runs(out_dir)
    summary = harness.summarize(results)
    shown = [agent for agent in order if any(agent in agent_runs for agent_runs in summary.values())]
    # Games in the order run (VARIANTS' for the screen, CHOSEN's for the comparison), any others after them
    games = [*variants, *sorted(variant for variant in summary if variant not in variants)]
    summary = {
        variant: {agent: summary[variant][agent] for agent in shown if agent in summary[variant]}
        for variant in games
        if variant in summary
    }
    if args.screen:
        table = (
            f"{screen_table(summary)}\n\nOne variant per game (the largest stack / single): {', '.join(one_per_game(summary))}"
        )
    else:
        table = comparison_table(summary, shown) + "\n\n" + "\n".join(goal_checks(summary))
    harness.write_results(out_dir, "minatar_screen" if args.screen else "minatar", results, summary, table, args)
    plot = out_dir / "minatar_screen.png" if args.screen else args.plot
    harness.plot_curves(summary, plot, "MinAtar, partially observable variants", ylabel="evaluation return")


if __name__ == "__main__":
    main()
