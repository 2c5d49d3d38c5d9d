import io
import pathlib
import pickle
import random
import warnings
import zipfile
from collections.abc import Iterable
from copy import deepcopy
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule, get_parameters_by_name, polyak_update
from torch.nn import functional as F

from sb3_drqn.common.buffers import PrioritizedRecurrentReplayBuffer, RecurrentReplayBuffer
from sb3_drqn.common.type_aliases import NumpyRecurrentState, RecurrentReplayBufferSamples, RecurrentState
from sb3_drqn.common.utils import inverse_value_rescale, value_rescale
from sb3_drqn.drqn.policies import (
    CnnLstmPolicy,
    MlpLstmPolicy,
    MultiInputLstmPolicy,
    RecurrentDQNPolicy,
    RecurrentQNetwork,
    check_observation_space_type,
)

SelfRecurrentDQN = TypeVar("SelfRecurrentDQN", bound="RecurrentDQN")

RECURRENT_INITS = ("stored", "zero")


def _slice_time(obs: PyTorchObs, start: int, end: int | None = None) -> PyTorchObs:
    """Slice time-major observations (or a dict of them) along time."""
    if isinstance(obs, dict):
        return {key: value[start:end] for key, value in obs.items()}
    return obs[start:end]


def _n_burn_in_steps(replay_data: RecurrentReplayBufferSamples) -> int:
    """Number of burn-in rows of sampled windows: the observations hold burn-in, learning steps and a successor."""
    observations = replay_data.observations
    n_rows = (next(iter(observations.values())) if isinstance(observations, dict) else observations).shape[0]
    return n_rows - replay_data.actions.shape[0] - 1


class RecurrentDQN(OffPolicyAlgorithm):
    """
    Deep Recurrent Q-Network (DRQN) with R2D2-style sequence replay: stored recurrent state and burn-in.

    The agent keeps a recurrent state per env while acting and stores it with every step. Learning samples
    ``batch_size`` windows of ``sequence_length`` consecutive steps of one episode, warms the recurrent state
    over up to ``burn_in`` earlier steps (without gradient), runs the whole window through the recurrent layer
    in one call and regresses double-Q targets with a masked Huber loss.

    Paper: DRQN https://arxiv.org/abs/1507.06527, R2D2 https://openreview.net/forum?id=r1lyTjAqYX

    :param policy: The policy model to use (MlpLstmPolicy, CnnLstmPolicy, MultiInputLstmPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function
        of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer, in steps over all envs
    :param learning_starts: how many steps of the model to collect transitions for before learning starts
    :param batch_size: Number of sequences (windows) per gradient update
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1) default 1 for hard update
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps. Alternatively pass a tuple of frequency and unit
        like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many gradient steps to do after each rollout (see ``train_freq``)
        Set to ``-1`` means to do as many gradient steps as steps done in the environment
        during the rollout.
    :param replay_buffer_class: Replay buffer class to use: a subclass of
        :class:`~sb3_drqn.common.buffers.RecurrentReplayBuffer` (the default when ``None``).
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Must be ``False``: the sequence replay buffer always stores each frame once.
    :param target_update_interval: update the target network every ``target_update_interval``
        environment steps.
    :param exploration_fraction: fraction of entire training period over which the exploration rate is reduced
    :param exploration_initial_eps: initial value of random action probability
    :param exploration_final_eps: final value of random action probability
    :param max_grad_norm: The maximum value for the gradient clipping
    :param sequence_length: Number of steps of each sampled window that enter the loss (DRQN paper: 10)
    :param burn_in: Number of steps before each window that only warm the recurrent state, without gradient
        (R2D2: 40); clipped at the episode start, where the state is exactly zero
    :param recurrent_init: Recurrent state at the start of each window's burn-in: ``"stored"``, the state the
        actor had (R2D2), or ``"zero"`` (the DRQN paper's bootstrapped random updates)
    :param n_steps: Length of the n-step returns (R2D2: 5), computed inside each sampled window: a return stops
        at the end of the episode (a termination does not bootstrap, a truncation does) and at the window's last
        learning step, and bootstraps from the step after it with the matching power of ``gamma``
    :param double_q: Use double Q-learning targets: action chosen by the online network, valued by the target
    :param prioritized_replay: Sample windows in proportion to their priorities (R2D2's prioritized sequence
        replay, :class:`~sb3_drqn.common.buffers.PrioritizedRecurrentReplayBuffer`), with importance-sampling weights
    :param priority_exponent: ``alpha``: windows are sampled in proportion to ``priority ** alpha`` (R2D2: 0.9)
    :param priority_eta: A window's priority is ``eta * max + (1 - eta) * mean`` of its absolute TD errors (R2D2: 0.9)
    :param importance_sampling_exponent: ``beta`` of the importance-sampling weights (R2D2: 0.6), or a schedule
        of the progress remaining (from 1 to 0), like ``learning_rate``
    :param importance_sampling_exponent_final: When set, ``beta`` anneals linearly from
        ``importance_sampling_exponent`` to this value over the training (the PER paper anneals to 1)
    :param value_rescaling: Learn rescaled values: targets are ``h(r + gamma^n h^-1(Q'))`` with
        ``h(x) = sign(x)(sqrt(|x| + 1) - 1) + 1e-3 x`` (R2D2), so the network's outputs are ``h`` of returns
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
        (``lstm_hidden_size``, ``n_lstm_layers``, ``rnn_type``, ``net_arch``, features extractor arguments)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    # Linear schedule will be defined in `_setup_model()`
    exploration_schedule: Schedule
    q_net: RecurrentQNetwork
    q_net_target: RecurrentQNetwork
    policy: RecurrentDQNPolicy
    replay_buffer: RecurrentReplayBuffer  # type: ignore[assignment]
    # Staleness measure (logged with the other statistics): windows per measure, longest episode prefix recomputed
    staleness_windows: int = 16
    staleness_horizon: int = 400

    def __init__(
        self,
        policy: str | type[RecurrentDQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,  # 1e6
        learning_starts: int = 100,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[RecurrentReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        target_update_interval: int = 10000,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        max_grad_norm: float = 10,
        sequence_length: int = 10,
        burn_in: int = 0,
        recurrent_init: str = "stored",
        n_steps: int = 1,
        double_q: bool = True,
        prioritized_replay: bool = False,
        priority_exponent: float = 0.9,
        priority_eta: float = 0.9,
        importance_sampling_exponent: float | Schedule = 0.6,
        importance_sampling_exponent_final: float | None = None,
        value_rescaling: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self._check_hyperparameters(
            batch_size=batch_size,
            buffer_size=buffer_size,
            sequence_length=sequence_length,
            burn_in=burn_in,
            recurrent_init=recurrent_init,
            n_steps=n_steps,
            optimize_memory_usage=optimize_memory_usage,
            replay_buffer_class=replay_buffer_class,
            gamma=gamma,
            tau=tau,
            target_update_interval=target_update_interval,
            exploration_fraction=exploration_fraction,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            learning_rate=learning_rate,
            learning_starts=learning_starts,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            max_grad_norm=max_grad_norm,
            stats_window_size=stats_window_size,
            prioritized_replay=prioritized_replay,
            priority_exponent=priority_exponent,
            priority_eta=priority_eta,
            importance_sampling_exponent=importance_sampling_exponent,
            importance_sampling_exponent_final=importance_sampling_exponent_final,
        )
        if env is not None and not isinstance(env, str):
            # Before SB3 wraps the env (its VecEnv would fail with an obscure error on such spaces)
            check_observation_space_type(env.observation_space)
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=None,  # No action noise
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=False,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            # Checked below, with a ValueError that names the problem
            supported_action_spaces=None,
            support_multi_env=True,
        )

        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.exploration_fraction = exploration_fraction
        self.target_update_interval = target_update_interval
        # For updating the target network with multiple envs:
        self._n_calls = 0
        self.max_grad_norm = max_grad_norm
        self.sequence_length = sequence_length
        self.burn_in = burn_in
        self.recurrent_init = recurrent_init
        self.double_q = double_q
        self.n_steps = n_steps
        self.prioritized_replay = prioritized_replay
        self.priority_exponent = priority_exponent
        self.priority_eta = priority_eta
        self.importance_sampling_exponent = importance_sampling_exponent
        self.importance_sampling_exponent_final = importance_sampling_exponent_final
        self.value_rescaling = value_rescaling
        # "epsilon" for the epsilon-greedy exploration
        self.exploration_rate = 0.0
        # Recurrent state of the actor, one per env (consistent with `_last_obs`), and its state after the step
        # being taken, committed only once that step is stored (an interrupted step leaves both unchanged)
        self._last_recurrent_state: NumpyRecurrentState | None = None
        self._next_recurrent_state: NumpyRecurrentState | None = None

        if env is not None:
            self._check_env_compatibility(self.action_space, self.n_envs)

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_hyperparameters(**kwargs: Any) -> None:
        """Raise a ValueError naming the first invalid hyper-parameter."""

        def require(condition: bool, name: str, expected: str) -> None:
            if not condition:
                raise ValueError(f"{name} must be {expected}, got {kwargs[name]!r}.")

        def is_int(value: Any) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return (
                isinstance(value, int | float | np.integer | np.floating)
                and not isinstance(value, bool)
                and np.isfinite(value)
            )

        require(is_int(kwargs["batch_size"]) and kwargs["batch_size"] >= 1, "batch_size", "an integer >= 1 (sequences)")
        require(is_int(kwargs["buffer_size"]) and kwargs["buffer_size"] >= 1, "buffer_size", "an integer >= 1")
        require(is_int(kwargs["sequence_length"]) and kwargs["sequence_length"] >= 1, "sequence_length", "an integer >= 1")
        require(is_int(kwargs["burn_in"]) and kwargs["burn_in"] >= 0, "burn_in", "an integer >= 0")
        require(kwargs["recurrent_init"] in RECURRENT_INITS, "recurrent_init", f"one of {RECURRENT_INITS}")
        require(is_int(kwargs["n_steps"]) and kwargs["n_steps"] >= 1, "n_steps", "an integer >= 1")
        if kwargs["optimize_memory_usage"]:
            raise ValueError(
                "optimize_memory_usage=True is not supported and not needed: RecurrentDQN's sequence replay buffer "
                "always stores each frame once."
            )
        buffer_class = kwargs["replay_buffer_class"]
        require(
            buffer_class is None or (isinstance(buffer_class, type) and issubclass(buffer_class, RecurrentReplayBuffer)),
            "replay_buffer_class",
            "None or a subclass of RecurrentReplayBuffer",
        )
        require(is_number(kwargs["gamma"]) and 0.0 <= kwargs["gamma"] <= 1.0, "gamma", "in [0, 1]")
        require(is_number(kwargs["tau"]) and 0.0 < kwargs["tau"] <= 1.0, "tau", "in (0, 1]")
        require(
            is_int(kwargs["target_update_interval"]) and kwargs["target_update_interval"] >= 1,
            "target_update_interval",
            "an integer >= 1",
        )
        for name in ("exploration_fraction", "exploration_initial_eps", "exploration_final_eps"):
            require(is_number(kwargs[name]) and 0.0 <= kwargs[name] <= 1.0, name, "in [0, 1]")
        learning_rate = kwargs["learning_rate"]
        require(
            callable(learning_rate) or (is_number(learning_rate) and learning_rate > 0), "learning_rate", "> 0 or a schedule"
        )
        require(is_int(kwargs["learning_starts"]) and kwargs["learning_starts"] >= 0, "learning_starts", "an integer >= 0")
        require(
            is_int(kwargs["gradient_steps"]) and kwargs["gradient_steps"] >= -1,
            "gradient_steps",
            "an integer >= 0, or -1 (as many as env steps)",
        )
        train_freq = kwargs["train_freq"]
        if isinstance(train_freq, tuple | list) and len(train_freq) == 2:
            frequency, unit = train_freq
        else:
            frequency, unit = train_freq, "step"
        require(
            is_int(frequency) and frequency >= 1 and unit in ("step", "episode"),
            "train_freq",
            'an integer >= 1 or a tuple (frequency >= 1, "step" or "episode")',
        )
        require(is_number(kwargs["max_grad_norm"]) and kwargs["max_grad_norm"] > 0, "max_grad_norm", "> 0")
        require(
            is_int(kwargs["stats_window_size"]) and kwargs["stats_window_size"] >= 1, "stats_window_size", "an integer >= 1"
        )
        require(is_number(kwargs["priority_exponent"]) and kwargs["priority_exponent"] >= 0, "priority_exponent", ">= 0")
        require(is_number(kwargs["priority_eta"]) and 0 <= kwargs["priority_eta"] <= 1, "priority_eta", "in [0, 1]")
        beta, beta_final = kwargs["importance_sampling_exponent"], kwargs["importance_sampling_exponent_final"]
        require(
            callable(beta) or (is_number(beta) and 0 <= beta <= 1), "importance_sampling_exponent", "in [0, 1] or a schedule"
        )
        require(
            beta_final is None or (is_number(beta_final) and 0 <= beta_final <= 1),
            "importance_sampling_exponent_final",
            "None or in [0, 1]",
        )
        if (
            kwargs["prioritized_replay"]
            and buffer_class is not None
            and not issubclass(buffer_class, PrioritizedRecurrentReplayBuffer)
        ):
            raise ValueError(
                "replay_buffer_class must be a subclass of PrioritizedRecurrentReplayBuffer with prioritized_replay=True, "
                f"got {buffer_class!r}."
            )

    def _min_buffer_size(self, n_envs: int) -> int:
        """The smallest ``buffer_size`` whose env columns hold one window (burn-in, learning steps, successor)."""
        return n_envs * (self.sequence_length + self.burn_in + 1)

    @staticmethod
    def _check_action_space(action_space: spaces.Space) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"RecurrentDQN supports only Discrete action spaces (the env's action space), got {action_space}."
            )

    def _check_env_compatibility(self, action_space: spaces.Space, n_envs: int) -> None:
        self._check_action_space(action_space)
        if self.buffer_size < self._min_buffer_size(n_envs):
            raise ValueError(
                f"buffer_size={self.buffer_size} is too small to hold one sequence: with n_envs={n_envs}, each env keeps "
                f"{self.buffer_size // n_envs} steps, fewer than burn_in + sequence_length + 1 = "
                f"{self.sequence_length + self.burn_in + 1}."
            )

    def _setup_model(self) -> None:
        self._check_action_space(self.action_space)
        buffer_size = self.buffer_size
        if buffer_size < self._min_buffer_size(self.n_envs):
            # Only reachable through load(..., buffer_size=...) (the constructor rejects it), e.g. buffer_size=1 to
            # predict without a replay buffer, as SB3 users do with DQN: keep the smallest buffer that works.
            buffer_size = self._min_buffer_size(self.n_envs)
            warnings.warn(
                f"buffer_size={self.buffer_size} cannot hold one sequence; the replay buffer holds {buffer_size} "
                "steps instead. Load with a larger buffer_size to train."
            )
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)

        policy = self.policy_class(
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            **self.policy_kwargs,
        )
        if not isinstance(policy, RecurrentDQNPolicy):
            raise ValueError(f"policy must be a RecurrentDQNPolicy (e.g. 'MlpLstmPolicy'), got {self.policy_class}.")
        self.policy = policy.to(self.device)

        replay_buffer_kwargs = dict(self.replay_buffer_kwargs)
        if self.prioritized_replay:
            if self.replay_buffer_class is None:
                self.replay_buffer_class = PrioritizedRecurrentReplayBuffer
            replay_buffer_kwargs.setdefault("priority_exponent", self.priority_exponent)
            replay_buffer_kwargs.setdefault("priority_eta", self.priority_eta)
        if self.replay_buffer_class is None:
            self.replay_buffer_class = RecurrentReplayBuffer
        if self.replay_buffer is None:
            self.replay_buffer = self.replay_buffer_class(  # type: ignore[call-arg]
                buffer_size,
                self.observation_space,
                self.action_space,
                device=self.device,
                n_envs=self.n_envs,
                sequence_length=self.sequence_length,
                burn_in=self.burn_in,
                recurrent_state_shape=self.policy.recurrent_state_shape if self.recurrent_init == "stored" else None,
                **replay_buffer_kwargs,
            )

        # Convert train freq parameter to TrainFreq object
        self._convert_train_freq()
        self._create_aliases()
        # Copy running stats, see GH issue #996
        self.batch_norm_stats = get_parameters_by_name(self.q_net, ["running_"])
        self.batch_norm_stats_target = get_parameters_by_name(self.q_net_target, ["running_"])
        self.exploration_schedule = LinearSchedule(
            self.exploration_initial_eps,
            self.exploration_final_eps,
            self.exploration_fraction,
        )
        self.importance_sampling_schedule: Schedule
        if callable(self.importance_sampling_exponent):
            self.importance_sampling_schedule = self.importance_sampling_exponent
        elif self.importance_sampling_exponent_final is not None:
            self.importance_sampling_schedule = LinearSchedule(
                self.importance_sampling_exponent, self.importance_sampling_exponent_final, 1.0
            )
        else:
            self.importance_sampling_schedule = ConstantSchedule(self.importance_sampling_exponent)
        if not self._recurrent_state_matches(self._last_recurrent_state, self.n_envs):
            self._last_recurrent_state = self._zero_recurrent_state(self.n_envs)

        if self.n_envs > 1 and self.n_envs > self.target_update_interval:
            warnings.warn(
                "The number of environments used is greater than the target network "
                f"update interval ({self.n_envs} > {self.target_update_interval}), "
                "therefore the target network will be updated after each call to env.step() "
                f"which corresponds to {self.n_envs} steps."
            )

    def _create_aliases(self) -> None:
        self.q_net = self.policy.q_net
        self.q_net_target = self.policy.q_net_target

    def _zero_recurrent_state(self, n_envs: int) -> NumpyRecurrentState:
        n_components, n_layers, hidden_size = self.policy.recurrent_state_shape
        return tuple(np.zeros((n_layers, n_envs, hidden_size), dtype=np.float32) for _ in range(n_components))

    def _recurrent_state_matches(self, state: NumpyRecurrentState | None, n_envs: int) -> bool:
        if state is None:
            return False
        n_components, n_layers, hidden_size = self.policy.recurrent_state_shape
        return len(state) == n_components and all(c.shape == (n_layers, n_envs, hidden_size) for c in state)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """
        Checks the validity of the environment, and if it is coherent, set it as the current environment.
        The number of envs must match the replay buffer's columns.

        :param env: The environment for learning a policy
        :param force_reset: Force call to ``reset()`` before training
            to avoid unexpected behavior.
            See issue https://github.com/DLR-RM/stable-baselines3/issues/597
        """
        wrapped = self._wrap_env(env, self.verbose)
        if self.replay_buffer is not None and wrapped.num_envs != self.replay_buffer.n_envs:
            raise ValueError(
                f"The new env has {wrapped.num_envs} envs but the replay buffer was built for "
                f"n_envs={self.replay_buffer.n_envs}; use the same number of envs."
            )
        super().set_env(wrapped, force_reset=force_reset)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        env_will_reset = reset_num_timesteps or self._last_obs is None
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if env_will_reset or not self._recurrent_state_matches(self._last_recurrent_state, self.n_envs):
            # A new episode starts in every env: zero state, and no window may join it to the previous one
            self._last_recurrent_state = self._zero_recurrent_state(self.n_envs)
            if self.replay_buffer is not None:
                self.replay_buffer.mark_episode_break()
        return total_timesteps, callback

    def _on_step(self) -> None:
        """
        Update the exploration rate and target network if needed.
        This method is called in ``collect_rollouts()`` after each step in the environment.
        """
        self._n_calls += 1
        # Account for multiple environments
        # each call to step() corresponds to n_envs transitions
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), self.tau)
            # Copy running stats, see GH issue #996
            polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Epsilon-greedy actions per env. The recurrent state advances on every step, also during warm-up and
        when a random action is taken; the state after the step is held until :meth:`_store_transition`
        stores the step (with the state before it) and commits it.

        :param learning_starts: Number of steps before learning for the warm-up phase (random actions).
        :param action_noise: Unused (no action noise for DQN)
        :param n_envs: Number of envs
        :return: The actions to take, twice (actions to execute, actions to store)
        """
        assert self._last_obs is not None, "self._last_obs was not set"
        greedy_actions, self._next_recurrent_state = self.policy.predict(self._last_obs, self._last_recurrent_state)
        if self.num_timesteps < learning_starts:
            explore = np.ones(n_envs, dtype=bool)
        else:
            explore = np.random.rand(n_envs) < self.exploration_rate
        actions = np.asarray(greedy_actions).reshape(n_envs).copy()
        for env_idx in np.flatnonzero(explore):
            actions[env_idx] = self.action_space.sample()
        return actions, actions

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Store the step with the actor's recurrent state before it, keeping the real final observation of
        episodes that end, then reset the recurrent state of those envs.

        :param replay_buffer: Replay buffer object where to store the transition.
        :param buffer_action: Actions taken
        :param new_obs: next observation in the current episode
            or first observation of the episode (when dones is True)
        :param reward: reward for the current transition
        :param dones: Termination signal
        :param infos: List of additional information about the transition.
            It may contain the terminal observations and information about timeout.
        """
        assert isinstance(replay_buffer, RecurrentReplayBuffer)
        # Store only the unnormalized version
        if self._vec_normalize_env is not None:
            new_obs_ = self._vec_normalize_env.get_original_obs()
            reward_ = self._vec_normalize_env.get_original_reward()
        else:
            self._last_original_obs, new_obs_, reward_ = self._last_obs, new_obs, reward

        # Only the real final observations of the envs that are done are read from next_obs:
        # copy (to avoid modification by reference) only when some env is done
        next_obs = new_obs_
        if np.any(dones):
            next_obs = deepcopy(new_obs_)
        for env_idx in np.flatnonzero(dones):
            final_obs = infos[env_idx].get("terminal_observation")
            if final_obs is None:
                continue
            if self._vec_normalize_env is not None:
                final_obs = self._vec_normalize_env.unnormalize_obs(final_obs)
            if isinstance(next_obs, dict):
                for key in next_obs:
                    next_obs[key][env_idx] = final_obs[key]
            else:
                next_obs[env_idx] = final_obs

        replay_buffer.add(
            self._last_original_obs,  # type: ignore[arg-type]
            next_obs,
            buffer_action,
            reward_,
            dones,
            infos,
            recurrent_state=self._last_recurrent_state,
        )

        self._last_obs = new_obs  # type: ignore[assignment]
        if self._vec_normalize_env is not None:
            self._last_original_obs = new_obs_  # type: ignore[assignment]
        # Commit the state after the step; the next observation of a done env starts a new episode
        assert self._next_recurrent_state is not None
        self._last_recurrent_state = self._next_recurrent_state
        if np.any(dones):
            keep = ~np.asarray(dones, dtype=bool)[None, :, None]
            self._last_recurrent_state = tuple(component * keep for component in self._last_recurrent_state)

    def _initial_window_state(self, replay_data: RecurrentReplayBufferSamples) -> RecurrentState:
        if self.recurrent_init == "stored" and len(replay_data.recurrent_states) > 0:
            return replay_data.recurrent_states
        return self.q_net.initial_state(replay_data.actions.shape[1])

    def _compute_loss(self, replay_data: RecurrentReplayBufferSamples) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Masked Huber loss of a batch of windows (weighted by the importance-sampling weights with prioritized
        replay). With value rescaling, Q-values and targets are in the rescaled space.

        :param replay_data: Windows sampled from the replay buffer
        :return: The loss, the Q-values of the taken actions at the learning steps ``(L, batch)``
            and the targets ``(L, batch)``
        """
        n_burn_in = _n_burn_in_steps(replay_data)
        initial_state = self._initial_window_state(replay_data)
        learning_obs = _slice_time(replay_data.observations, n_burn_in)

        burn_in_obs = _slice_time(replay_data.observations, 0, n_burn_in)
        with th.no_grad():
            # Burn-in warms the state of both networks, without gradient
            target_state = self.q_net_target.burn_in_observations(burn_in_obs, initial_state, replay_data.burn_in_lengths)
            online_state = self.q_net.burn_in_observations(burn_in_obs, initial_state, replay_data.burn_in_lengths)
            # Target network over the learning steps and the step after them
            target_features = self.q_net_target.extract_sequence_features(learning_obs)
            target_q_values, _ = self.q_net_target.q_values_from_features(target_features, target_state)

        # The whole window goes through the recurrent layer in one call: (L + 1, batch, n_actions)
        learning_features = self.q_net.extract_sequence_features(learning_obs)
        q_values, _ = self.q_net.q_values_from_features(learning_features, online_state)

        with th.no_grad():
            if self.double_q:
                next_actions = q_values[1:].argmax(dim=-1, keepdim=True)
                next_q_values = th.gather(target_q_values[1:], dim=-1, index=next_actions).squeeze(-1)
            else:
                next_q_values = target_q_values[1:].max(dim=-1).values
            if self.value_rescaling:
                target = value_rescale(self._n_step_targets(replay_data, inverse_value_rescale(next_q_values)))
            else:
                target = self._n_step_targets(replay_data, next_q_values)

        current_q_values = th.gather(q_values[:-1], dim=-1, index=replay_data.actions.long().unsqueeze(-1)).squeeze(-1)
        per_step_loss = F.smooth_l1_loss(current_q_values, target, reduction="none") * replay_data.mask
        if replay_data.weights is not None:
            per_step_loss = per_step_loss * replay_data.weights[None, :]
        loss = per_step_loss.sum() / replay_data.mask.sum().clamp(min=1.0)
        return loss, current_q_values, target

    def _window_priorities(self, current_q_values: th.Tensor, target: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """
        R2D2's priority of each window: ``eta * max + (1 - eta) * mean`` of the absolute TD errors of its valid
        learning steps.

        :param current_q_values: ``(L, batch)``
        :param target: ``(L, batch)``
        :param mask: ``(L, batch)``
        :return: ``(batch,)`` priorities
        """
        td_errors = (target - current_q_values).detach().abs() * mask
        mean = td_errors.sum(dim=0) / mask.sum(dim=0).clamp(min=1.0)
        return self.priority_eta * td_errors.max(dim=0).values + (1.0 - self.priority_eta) * mean

    def _n_step_targets(self, replay_data: RecurrentReplayBufferSamples, next_q_values: th.Tensor) -> th.Tensor:
        """
        n-step targets of every learning step of the windows (``n_steps=1``: the one-step TD target).

        The return of step ``k`` sums the discounted rewards of the valid steps ``k .. k + m - 1``, where ``m`` is
        ``n_steps`` or less: it stops after the last valid step of the run that starts at ``k`` (the episode's
        end, the window's end, or the newest stored step), then bootstraps from the value of the step after it,
        ``gamma ** m * (1 - terminated) * next_q_values[k + m - 1]``.

        :param replay_data: The windows (rewards, terminations, mask: ``(L, batch)``)
        :param next_q_values: ``(L, batch)`` value of the step after each learning step
        :return: ``(L, batch)`` targets (meaningless where the mask is 0)
        """

        def shifted(tensor: th.Tensor, steps: int) -> th.Tensor:
            # tensor[k + steps] at row k, zeros past the window
            return th.cat([tensor[steps:], tensor.new_zeros((min(steps, tensor.shape[0]), *tensor.shape[1:]))])

        mask = replay_data.mask
        returns = th.zeros_like(replay_data.rewards)
        bootstrap = th.zeros_like(replay_data.rewards)
        run = th.ones_like(mask)
        for i in range(self.n_steps):
            # run: steps k .. k + i are all valid
            run = run * shifted(mask, i)
            returns = returns + (self.gamma**i) * run * shifted(replay_data.rewards, i)
            next_valid = shifted(mask, i + 1) if i < self.n_steps - 1 else th.zeros_like(mask)
            last = run * (1.0 - next_valid)
            not_terminal = 1.0 - shifted(replay_data.terminations, i)
            bootstrap = bootstrap + last * (self.gamma ** (i + 1)) * not_terminal * shifted(next_q_values, i)
        return returns + bootstrap

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rate according to schedule
        self._update_learning_rate(self.policy.optimizer)

        # Statistics stay on the device until the end: no host round trip per gradient step
        stats = []
        prioritized = isinstance(self.replay_buffer, PrioritizedRecurrentReplayBuffer)
        beta = float(self.importance_sampling_schedule(self._current_progress_remaining))
        sample_kwargs: dict[str, Any] = {"beta": beta} if prioritized else {}
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env, **sample_kwargs)
            loss, current_q_values, target = self._compute_loss(replay_data)

            self.policy.optimizer.zero_grad()
            loss.backward()
            # Clip gradient norm
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

            if prioritized:
                assert isinstance(self.replay_buffer, PrioritizedRecurrentReplayBuffer)
                assert replay_data.leaf_indices is not None
                priorities = self._window_priorities(current_q_values, target, replay_data.mask)
                self.replay_buffer.update_priorities(replay_data.leaf_indices, priorities.cpu().numpy())

            with th.no_grad():
                n_valid = replay_data.mask.sum()
                q_mean = (current_q_values * replay_data.mask).sum() / n_valid.clamp(min=1.0)
                stats.append(th.stack([loss.detach(), q_mean, n_valid / replay_data.mask.numel()]))

        # Increase update counter
        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if stats:
            loss_mean, q_mean_mean, valid_fraction = th.stack(stats).mean(dim=0).tolist()
            self.logger.record("train/loss", loss_mean)
            self.logger.record("train/q_mean", q_mean_mean)
            self.logger.record("train/valid_step_fraction", valid_fraction)
        if prioritized:
            self.logger.record("train/importance_sampling_exponent", beta)

    def recurrent_staleness(self, n_windows: int | None = None) -> float | None:
        """
        R2D2's measure of recurrent-state staleness, on windows sampled uniformly from the replay buffer: for each
        window, the Q-values of its valid learning steps computed as in training (from the stored state at the
        start of the burn-in, or zeros with ``recurrent_init="zero"``, then the burn-in) are compared with those
        computed from a state recomputed with the current network from the episode's first step,
        ``||Q_stored - Q_recomputed||_2 / max |Q_recomputed|`` over the window's valid steps and all actions;
        the mean over the windows whose episode start is stored, at most ``staleness_horizon`` steps earlier.

        Logged as ``train/recurrent_staleness`` each time the logs are written (every ``log_interval`` episodes).

        :param n_windows: Number of windows (default: ``staleness_windows``)
        :return: The mean relative difference, or ``None`` when no window has its episode start available
        """
        buffer = self.replay_buffer
        if buffer is None or buffer.size() == 0:
            return None
        n_windows = self.staleness_windows if n_windows is None else n_windows
        try:
            # Its own generator: measuring must not change the training's random draws
            offsets, env_indices = buffer.sample_window_starts(n_windows, rng=np.random.default_rng(self._n_updates))
        except RuntimeError:
            return None
        prefixes, lengths, available = buffer.episode_prefixes(
            offsets, env_indices, self.staleness_horizon, env=self._vec_normalize_env
        )
        if not available.any():
            return None
        replay_data = buffer._get_samples(offsets, env=self._vec_normalize_env, env_indices=env_indices)
        seq_len = replay_data.actions.shape[0]
        observations = replay_data.observations
        n_burn_in = _n_burn_in_steps(replay_data)
        self.policy.set_training_mode(False)
        with th.no_grad():
            stored_state = self.q_net.burn_in_observations(
                _slice_time(observations, 0, n_burn_in), self._initial_window_state(replay_data), replay_data.burn_in_lengths
            )
            recomputed_state = self.q_net.burn_in_observations(prefixes, self.q_net.initial_state(len(offsets)), lengths)
            features = self.q_net.extract_sequence_features(_slice_time(observations, n_burn_in, n_burn_in + seq_len))
            q_stored, _ = self.q_net.q_values_from_features(features, stored_state)
            q_recomputed, _ = self.q_net.q_values_from_features(features, recomputed_state)
            mask = replay_data.mask.unsqueeze(-1)
            distance = ((q_stored - q_recomputed) * mask).pow(2).sum(dim=(0, 2)).sqrt()
            scale = (q_recomputed.abs() * mask).amax(dim=(0, 2)).clamp(min=1e-8)
            relative = (distance / scale)[th.as_tensor(available, device=distance.device)]
        return float(relative.mean())

    def dump_logs(self) -> None:
        staleness = self.recurrent_staleness() if self.num_timesteps >= self.learning_starts else None
        if staleness is not None:
            self.logger.record("train/recurrent_staleness", staleness)
        super().dump_logs()

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: NumpyRecurrentState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, NumpyRecurrentState]:
        """
        Get the action from an observation and the recurrent state (RecurrentPPO's contract), epsilon-greedy
        with the current exploration rate unless ``deterministic``. The state advances on every call, whichever
        action is taken. The training-time state is never touched.

        :param observation: the input observation, ``(n_envs, *obs_shape)`` or a single one
        :param state: The state returned by the previous call (each component ``(n_layers, n_envs, hidden_size)``),
            ``None`` for zeros
        :param episode_start: ``(n_envs,)``: where True, that env's state is reset before the step
        :param deterministic: Whether to take greedy actions, or epsilon-greedy ones
        :return: the model's actions and the next recurrent state
        """
        actions, next_state = self.policy.predict(observation, state, episode_start, deterministic)
        if not deterministic and self.exploration_rate > 0:
            flat_actions = np.array(actions).reshape(-1)
            for env_idx in np.flatnonzero(np.random.rand(len(flat_actions)) < self.exploration_rate):
                flat_actions[env_idx] = self.action_space.sample()
            actions = flat_actions.reshape(np.shape(actions))
        return actions, next_state

    def learn(
        self: SelfRecurrentDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "RecurrentDQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentDQN:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def load_replay_buffer(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        truncate_last_traj: bool = True,
    ) -> None:
        """
        Load a replay buffer saved by :meth:`save_replay_buffer`. The file is checked before anything changes:
        a file that cannot be read, or a buffer that does not fit this model, raises a ValueError and the
        current buffer stays in place.

        :param path: Path to the pickled replay buffer.
        :param truncate_last_traj: Unused (only meaningful for ``HerReplayBuffer``); the env is reset when
            training starts again after loading a model, and the buffer keeps the last episode's steps apart.
        """
        try:
            buffer = load_from_pkl(path, self.verbose)
        except (
            pickle.UnpicklingError,
            EOFError,
            zipfile.BadZipFile,
            AttributeError,
            ImportError,
            IndexError,
            ValueError,
        ) as error:
            raise ValueError(f"Could not read a replay buffer from {path!r}: {error}") from error
        if not isinstance(buffer, RecurrentReplayBuffer):
            raise ValueError(
                f"The replay buffer in {path!r} is a {type(buffer).__name__}, not a RecurrentReplayBuffer "
                "(saved by another algorithm?)."
            )
        problems = []
        if isinstance(buffer, PrioritizedRecurrentReplayBuffer) != self.prioritized_replay:
            problems.append(f"it is a {type(buffer).__name__} but the model has prioritized_replay={self.prioritized_replay}")
        if buffer.observation_space != self.observation_space:
            problems.append(f"observation space {buffer.observation_space} != {self.observation_space}")
        if buffer.action_space != self.action_space:
            problems.append(f"action space {buffer.action_space} != {self.action_space}")
        if buffer.n_envs != self.n_envs:
            problems.append(f"n_envs {buffer.n_envs} != {self.n_envs}")
        if buffer.buffer_size < self.sequence_length + 1:
            problems.append(f"{buffer.buffer_size} steps per env cannot hold a window of {self.sequence_length + 1}")
        if self.recurrent_init == "stored" and buffer.recurrent_state_shape != self.policy.recurrent_state_shape:
            problems.append(
                f"stored recurrent state shape {buffer.recurrent_state_shape} "
                f"!= the policy's {self.policy.recurrent_state_shape}"
            )
        if problems:
            raise ValueError(f"The replay buffer in {path!r} does not fit this model: " + "; ".join(problems) + ".")
        # Sampling settings are the model's, and so is the device
        buffer.sequence_length = self.sequence_length
        buffer.burn_in = self.burn_in
        buffer.device = self.device
        self.replay_buffer = buffer

    def _get_rng_state(self) -> dict[str, Any]:
        """The states of every random generator training draws from (buffer sampling, exploration, torch)."""
        rng_state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": th.get_rng_state(),
            "action_space": self.action_space.np_random.bit_generator.state,
        }
        if th.cuda.is_available():
            rng_state["torch_cuda"] = th.cuda.get_rng_state_all()
        return rng_state

    def _set_rng_state(self, rng_state: dict[str, Any]) -> None:
        random.setstate(rng_state["python"])
        np.random.set_state(rng_state["numpy"])
        th.set_rng_state(rng_state["torch"])
        self.action_space.np_random.bit_generator.state = rng_state["action_space"]
        if "torch_cuda" in rng_state and th.cuda.is_available() and len(rng_state["torch_cuda"]) == th.cuda.device_count():
            th.cuda.set_rng_state_all(rng_state["torch_cuda"])

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save all the attributes of the object and the model parameters in a zip-file, with the states of the
        random generators, which :meth:`load` restores: with :meth:`save_replay_buffer` and
        :meth:`load_replay_buffer`, a resumed run draws the same batches as an uninterrupted one.

        :param path: path to the file where the rl agent should be saved
        :param exclude: name of parameters that should be excluded in addition to the default ones
        :param include: name of parameters that might be excluded but should be included anyway
        """
        self._saved_rng_state = self._get_rng_state()
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            del self._saved_rng_state

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfRecurrentDQN],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfRecurrentDQN:
        """
        Load the model from a zip-file (see SB3's ``BaseAlgorithm.load``). The random generators (Python's,
        NumPy's global one, PyTorch's and the action space's) are set to the states saved with the model, so
        that training continues as it would have without the interruption (the environment's state aside),
        unless a new ``seed`` is given in ``kwargs``: the generators are then seeded with it.

        :param path: path to the file (or a file-like) where to load the agent from
        :param env: the new environment to run the loaded model on
            (can be None if you only need prediction from a trained model) has priority over any saved environment
        :param device: Device on which the code should run.
        :param custom_objects: Dictionary of objects to replace upon loading.
        :param print_system_info: Whether to print system info from the saved model and the current system info
        :param force_reset: Force call to ``reset()`` before training to avoid unexpected behavior.
        :param kwargs: extra arguments to change the model when loading
        :return: new model instance with loaded parameters
        """
        model = super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        # Models saved before the random states were saved have none
        rng_state = model.__dict__.pop("_saved_rng_state", None)
        if rng_state is not None and kwargs.get("seed") is None:
            model._set_rng_state(rng_state)
        return model

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "q_net", "q_net_target", "_next_recurrent_state"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]

        return state_dicts, []
