"""
Writes the save-format fixture that ``test_save_format.py`` loads: a small model saved by this version, and the
actions and Q-values it gives on a fixed observation sequence. Run it only when the save format changes on
purpose (and say so in the change log): ``python tests/make_fixtures.py``.
"""

import json
from pathlib import Path

import numpy as np
import torch as th

from sb3_drqn import RecurrentDQN, __version__
from sb3_drqn.common.envs import CueMemoryEnv

FIXTURES = Path(__file__).parent / "fixtures"


def observation_sequence() -> tuple[np.ndarray, np.ndarray]:
    """A fixed sequence of 2-env observations of CueMemoryEnv(delay=3), and where episodes start."""
    eye = np.eye(3, dtype=np.float32)
    blank = np.zeros(3, dtype=np.float32)
    steps = [eye[0], blank, blank, eye[2], eye[1], blank, blank, eye[2]]
    obs = np.stack([np.stack(steps), np.stack(steps[4:] + steps[:4])], axis=1)
    starts = np.zeros((len(steps), 2), dtype=bool)
    starts[[0, 4], :] = True
    return obs, starts


def outputs(model: RecurrentDQN) -> dict[str, list]:
    obs, starts = observation_sequence()
    state, actions, q_values = None, [], []
    for t in range(len(obs)):
        action, next_state = model.predict(obs[t], state=state, episode_start=starts[t], deterministic=True)
        with th.no_grad():
            state_tensor = model.policy._check_state(state, 2)
            q, _ = model.q_net(th.as_tensor(obs[t]), state_tensor, th.as_tensor(starts[t], dtype=th.float32))
        actions.append(action.tolist())
        q_values.append(q.numpy().tolist())
        state = next_state
    return {"actions": actions, "q_values": q_values}


def main() -> None:
    th.set_num_threads(1)
    model = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(delay=3),
        learning_starts=50,
        buffer_size=500,
        batch_size=8,
        sequence_length=4,
        burn_in=2,
        policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8]),
        seed=0,
    )
    model.learn(300)
    FIXTURES.mkdir(exist_ok=True)
    model.save(FIXTURES / "drqn_cue_memory.zip")
    (FIXTURES / "drqn_cue_memory.json").write_text(json.dumps({"version": __version__, **outputs(model)}, indent=1))


if __name__ == "__main__":
    main()
