"""Learning on a POMDP where a memoryless agent provably fails: the cue is shown only at the first step."""

import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv

DELAY = 8  # episodes of 9 steps: cue, 7 blank steps, query
TIMESTEPS = 8_000
COMMON = dict(
    learning_rate=1e-3,
    buffer_size=20_000,
    learning_starts=500,
    train_freq=1,
    target_update_interval=500,
    exploration_fraction=0.3,
    exploration_final_eps=0.05,
)


def success_rate(model, n_episodes: int = 200) -> float:
    env = make_vec_env(CueMemoryEnv, n_envs=1, seed=123, env_kwargs=dict(delay=DELAY))
    rewards, _ = evaluate_policy(model, env, n_eval_episodes=n_episodes, return_episode_rewards=True)
    return float(np.mean(np.array(rewards) > 0))


@pytest.mark.slow
@pytest.mark.parametrize(
    "recurrent_init,sequence_length,burn_in",
    [
        # Windows shorter than an episode: the cue reaches the query through the stored state and burn-in
        ("stored", 5, 4),
        # The DRQN paper's zero state: windows long enough to see the cue
        ("zero", 10, 0),
    ],
)
def test_recurrent_dqn_remembers_the_cue(recurrent_init, sequence_length, burn_in):
    env = make_vec_env(CueMemoryEnv, n_envs=1, seed=0, env_kwargs=dict(delay=DELAY))
    model = RecurrentDQN(
        "MlpLstmPolicy",
        env,
        batch_size=32,
        sequence_length=sequence_length,
        burn_in=burn_in,
        recurrent_init=recurrent_init,
        policy_kwargs=dict(lstm_hidden_size=32),
        seed=0,
        **COMMON,
    )
    model.learn(TIMESTEPS)
    assert success_rate(model) >= 0.95


@pytest.mark.slow
def test_memoryless_dqn_stays_at_chance():
    env = make_vec_env(CueMemoryEnv, n_envs=1, seed=0, env_kwargs=dict(delay=DELAY))
    model = DQN("MlpPolicy", env, batch_size=32 * 5, policy_kwargs=dict(net_arch=[32]), seed=0, **COMMON)
    model.learn(TIMESTEPS)
    # The query observation is the same whatever the cue: at best 50%, up to sampling noise over 200 episodes
    assert success_rate(model) <= 0.62
