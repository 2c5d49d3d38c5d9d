"""
DQN-style CartPole: RecurrentDQN (``MlpLstmPolicy``) beside SB3's DQN on ``CartPole-v1`` and ``CartPoleNoVel-v1``.

``CartPoleNoVel-v1`` (registered by the RL Zoo, ``rl_zoo3.import_envs``) is CartPole with the cart and pole
velocities masked out of the observation: one observation no longer tells where the pole is going, so a
memoryless agent is stuck far below the maximum return of 500, while a recurrent one can infer the velocities.
On ``CartPole-v1`` (full state) both kinds of agent should reach 500.

Settings come from the installed hyper-parameter files that the zoo's own commands use:

- ``drqn``: the ``CartPoleNoVel-v1`` / ``CartPole-v1`` entry of sb3-drqn's ``drqn.yml`` (observations normalised
  with ``VecNormalize`` where the entry says so: CartPoleNoVel-v1's does, CartPole-v1's does not);
- ``dqn``: the RL Zoo's tuned ``CartPole-v1`` entry of its ``dqn.yml``, on both envs (the zoo has no DQN entry
  for ``CartPoleNoVel-v1``).

Every agent gets the same number of env steps, ``--timesteps`` (100k by default, drqn.yml's budget; dqn.yml's
own budget is 50k, over which its exploration schedule is stretched). Evaluation: 10 greedy episodes before
training, every 5,000 steps and at the end.

Budget: 2 envs x 2 agents x 3 seeds = 12 runs of 100k steps, one after the other on one core: about 45 minutes
(measured on a busy 2-core machine: drqn about 300 and dqn about 1,000 env steps per second with the current
entries' 64 sequences per batch, so a drqn run takes about 5 to 6 minutes and a dqn run under 2, evaluations
included).

Reproduce (writes ``examples/results/cartpole/cartpole.{json,png}``)::

    python examples/cartpole.py
    python examples/cartpole.py --envs CartPoleNoVel-v1 --seeds 0 --timesteps 30000   # a quick look

The same agents with the zoo's commands (one seed each)::

    python -m rl_zoo3.train --algo drqn --env CartPoleNoVel-v1 --seed 0 -tb runs/
    python -m rl_zoo3.train --algo dqn --env CartPole-v1 --seed 0 -tb runs/
"""

import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)
from common import load_zoo_settings, make_model, make_parser, parse_overrides, run_experiments, zoo_hyperparams_path
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_drqn import RecurrentDQN

NAME = "cartpole"
ENV_IDS = ("CartPole-v1", "CartPoleNoVel-v1")
ALGOS: dict[str, type[OffPolicyAlgorithm]] = {"drqn": RecurrentDQN, "dqn": DQN}
# The zoo's DQN settings for CartPole-v1 are used on both envs
DQN_ENTRY = "CartPole-v1"
MAX_EVAL_ENVS = 5


def main() -> None:
    parser = make_parser(__doc__, NAME, algos=list(ALGOS), timesteps=100_000, n_seeds=3, eval_freq=5000, eval_episodes=10)
    parser.add_argument("--envs", nargs="+", choices=ENV_IDS, default=list(ENV_IDS), help="envs (default: both)")
    args = parser.parse_args()
    overrides = parse_overrides(args.hyperparams, ALGOS.values())
    settings = {("drqn", env_id): load_zoo_settings(zoo_hyperparams_path("drqn"), env_id) for env_id in args.envs} | {
        ("dqn", env_id): load_zoo_settings(zoo_hyperparams_path("dqn"), DQN_ENTRY) for env_id in args.envs
    }

    def build(algo: str, env_id: str, seed: int) -> tuple[BaseAlgorithm, VecEnv]:
        algo_settings = settings[(algo, env_id)]
        env = make_vec_env(env_id, n_envs=1, seed=seed)
        eval_env = make_vec_env(env_id, n_envs=min(args.eval_episodes, MAX_EVAL_ENVS), seed=seed + 10_000)
        if algo_settings.normalize is not None:
            env = VecNormalize(env, **algo_settings.normalize)
            # Statistics are copied from the training env before each evaluation (EvalCallback)
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        model = make_model(ALGOS[algo], algo_settings.policy, env, algo_settings.kwargs, overrides, args, seed)
        return model, eval_env

    run_experiments(
        NAME,
        args,
        args.envs,
        build,
        deterministic=True,
        title="DRQN (MlpLstmPolicy, drqn.yml) vs DQN (zoo's tuned CartPole-v1 settings)",
        config=dict(
            envs=args.envs,
            settings={
                f"{algo} on {env_id}": dict(file=str(zoo_hyperparams_path(algo)), entry=s.entry, **s.raw)
                for (algo, env_id), s in settings.items()
            },
        ),
        reference=(475.0, "475 (solved)"),
    )


if __name__ == "__main__":
    main()
