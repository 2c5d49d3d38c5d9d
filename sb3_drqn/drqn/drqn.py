import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import LinearSchedule, get_parameters_by_name, polyak_update
from torch.nn import functional as F

from sb3_drqn.common.buffers import PrioritizedRecurrentReplayBuffer, RecurrentReplayBuffer
from sb3_drqn.common.save_util import RandomStateSavingAlgorithm, ReplayBufferFileAlgorithm
from sb3_drqn.common.type_aliases import NumpyRecurrentState, RecurrentReplayBufferSamples, RecurrentState
from sb3_drqn.common.utils import (
    inverse_value_rescale,
    n_step_targets,
    value_rescale,
)
from sb3_drqn.drqn.checks import check_hyperparameters
from sb3_drqn.drqn.policies import (
    CnnLstmPolicy,
    MlpLstmPolicy,
    MultiInputLstmPolicy,
    RecurrentDQNPolicy,
    RecurrentQNetwork,
    check_observation_space_type,
)
from sb3_drqn.drqn.staleness import recurrent_staleness

SelfRecurrentDQN = TypeVar("SelfRecurrentDQN", bound="RecurrentDQN")

# Replay-buffer settings that are RecurrentDQN's own arguments: also given in replay_buffer_kwargs, they must agree
OWN_BUFFER_SETTINGS = ("sequence_length", "burn_in", "priority_exponent", "priority_eta")
# SB3's DQN policy names, and ours
DQN_POLICY_NAMES = {"MlpPolicy": "MlpLstmPolicy", "CnnPolicy": "CnnLstmPolicy", "MultiInputPolicy": "MultiInputLstmPolicy"}


class _BufferWithRecurrentState:
    """What SB3's ``_store_transition`` is given as the replay buffer: its ``add`` stores the step with the actor's
    recurrent state before it."""

    def __init__(self, buffer: RecurrentReplayBuffer, recurrent_state: NumpyRecurrentState) -> None:
        self.buffer, self.recurrent_state = buffer, recurrent_state

    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs["recurrent_state"] = self.recurrent_state
        self.buffer.add(*args, **kwargs)


class RecurrentDQN(RandomStateSavingAlgorithm, ReplayBufferFileAlgorithm, OffPolicyAlgorithm):
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
    # Staleness measure (logged with the other statistics): windows per measure, longest episode prefix recomputed,
    # env steps between two measures
    staleness_windows: int = 16
    staleness_horizon: int = 400
    staleness_interval: int = 1000
    _staleness: float | None = None
    _next_staleness_step: int = 0

    def __init__(
        self,
        policy: str | type[RecurrentDQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 5e-4,
        buffer_size: int = 1_000_000,  # 1e6
        learning_starts: int = 1000,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[RecurrentReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        target_update_interval: int = 1000,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.01,
        max_grad_norm: float = 10,
        sequence_length: int = 32,
        burn_in: int = 8,
        recurrent_init: str = "stored",
        n_steps: int = 5,
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
        if replay_buffer_class is None:
            replay_buffer_class = PrioritizedRecurrentReplayBuffer if prioritized_replay else RecurrentReplayBuffer
        # The constructor's arguments, by name; then the replay buffer's settings, by the buffer's own checks
        check_hyperparameters(locals())
        replay_buffer_class.check_arguments(sequence_length, burn_in, optimize_memory_usage)
        PrioritizedRecurrentReplayBuffer.check_priority_arguments(priority_exponent, priority_eta)
        own = dict(
            sequence_length=sequence_length, burn_in=burn_in, priority_exponent=priority_exponent, priority_eta=priority_eta
        )
        conflicts = {name: value for name, value in (replay_buffer_kwargs or {}).items() if own.get(name, value) != value}
        if conflicts:
            raise ValueError(
                f"replay_buffer_kwargs sets {conflicts}, RecurrentDQN's own arguments: give each once, as RecurrentDQN's."
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
            # Checked in _setup_model, with a ValueError that names the problem
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
            replay_buffer_class.check_size(buffer_size, self.n_envs, sequence_length, burn_in)
        if _init_setup_model:
            self._setup_model()

    def _get_policy_from_name(self, policy_name: str) -> type[BasePolicy]:
        if policy_name in DQN_POLICY_NAMES:
            raise ValueError(
                f"Policy {policy_name} is DQN's name: RecurrentDQN's policies are {', '.join(self.policy_aliases)}; "
                f"use {DQN_POLICY_NAMES[policy_name]!r}."
            )
        return super()._get_policy_from_name(policy_name)

    def _setup_model(self) -> None:
        RecurrentReplayBuffer.check_action_space(self.action_space)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs)
        if not isinstance(policy, RecurrentDQNPolicy):
            raise ValueError(f"policy must be a RecurrentDQNPolicy (e.g. 'MlpLstmPolicy'), got {self.policy_class}.")
        self.policy = policy.to(self.device)
        if self.replay_buffer is None:
            self.replay_buffer = self._make_replay_buffer()
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
        beta, beta_final = self.importance_sampling_exponent, self.importance_sampling_exponent_final
        self.importance_sampling_schedule: Schedule = (
            beta if callable(beta) else LinearSchedule(beta, beta if beta_final is None else beta_final, 1.0)
        )
        if not self._recurrent_state_matches(self._last_recurrent_state, self.n_envs):
            self._last_recurrent_state = self._zero_recurrent_state(self.n_envs)
        if self.n_envs > 1 and self.n_envs > self.target_update_interval:
            warnings.warn(
                "The number of environments used is greater than the target network "
                f"update interval ({self.n_envs} > {self.target_update_interval}), "
                "therefore the target network will be updated after each call to env.step() "
                f"which corresponds to {self.n_envs} steps."
            )

    def _make_replay_buffer(self) -> RecurrentReplayBuffer:
        """The replay buffer, with RecurrentDQN's own settings (those in ``replay_buffer_kwargs`` were checked to agree)."""
        assert self.replay_buffer_class is not None and issubclass(self.replay_buffer_class, RecurrentReplayBuffer)
        settings = self._replay_buffer_settings()
        if self.buffer_size < settings["buffer_size"]:
            # Only reachable through load(..., buffer_size=...) (the constructor refuses it), e.g. buffer_size=1 to
            # predict without a replay buffer, as SB3 users do with DQN: keep the smallest buffer that works.
            warnings.warn(
                f"buffer_size={self.buffer_size} cannot hold one sequence; the replay buffer holds {settings['buffer_size']} "
                "steps instead. Load with a larger buffer_size to train."
            )
        settings["buffer_size"] = max(self.buffer_size, settings["buffer_size"])
        kwargs = {name: value for name, value in self.replay_buffer_kwargs.items() if name not in OWN_BUFFER_SETTINGS}
        return self.replay_buffer_class(device=self.device, **settings, **kwargs)

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
        SB3's ``set_env`` (same arguments); a different number of envs than the model's (the replay buffer's
        columns) raises a ValueError, where SB3 asserts.
        """
        wrapped = self._wrap_env(env, self.verbose)
        if wrapped.num_envs != self.n_envs:
            raise ValueError(
                f"The new env has {wrapped.num_envs} envs but the model (and its replay buffer) has n_envs={self.n_envs}; "
                "use the same number of envs."
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
        Epsilon-greedy actions per env (SB3's arguments; no action noise). The recurrent state advances on every
        step, also during warm-up and when a random action is taken; the state after the step is held until
        :meth:`_store_transition` stores the step (with the state before it) and commits it.
        """
        assert self._last_obs is not None, "self._last_obs was not set"
        assert self._last_recurrent_state is not None
        state = tuple(th.as_tensor(component, device=self.device) for component in self._last_recurrent_state)
        greedy_actions, self._next_recurrent_state = self.policy._act(self.policy._obs_batch(self._last_obs)[0], state)
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
        SB3's ``_store_transition`` (same arguments; the real final observation of episodes that end is kept), given
        a view of the buffer whose ``add`` stores the actor's recurrent state before the step with it; then the
        state after the step is committed, reset to zeros in the envs whose episode ended.
        """
        assert isinstance(replay_buffer, RecurrentReplayBuffer) and self._next_recurrent_state is not None
        store = _BufferWithRecurrentState(replay_buffer, self._last_recurrent_state)  # type: ignore[arg-type]
        super()._store_transition(store, buffer_action, new_obs, reward, dones, infos)  # type: ignore[arg-type]
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
        initial_state = self._initial_window_state(replay_data)
        with th.no_grad():
            target_q_values = self.q_net_target.window_q_values(replay_data, initial_state, one_call=True)
        # (L + 1, batch, n_actions): the learning steps and the step after them
        q_values = self.q_net.window_q_values(replay_data, initial_state)

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

    def _n_step_targets(self, replay_data: RecurrentReplayBufferSamples, next_q_values: th.Tensor) -> th.Tensor:
        """:func:`~sb3_drqn.common.utils.n_step_targets` of a batch of windows, ``next_q_values`` ``(L, batch)``."""
        data = replay_data
        return n_step_targets(data.rewards, data.terminations, data.mask, next_q_values, self.gamma, self.n_steps)

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        # Statistics stay on the device until the end: no host round trip per gradient step
        stats = []
        prioritized = isinstance(self.replay_buffer, PrioritizedRecurrentReplayBuffer)
        beta = float(self.importance_sampling_schedule(self._current_progress_remaining))
        sample_kwargs: dict[str, Any] = {"beta": beta} if prioritized else {}
        # Gradients clipped: the optimizer's parameters (policy.parameters() walks every module on each call)
        parameters = [parameter for group in self.policy.optimizer.param_groups for parameter in group["params"]]
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env, **sample_kwargs)
            loss, current_q_values, target = self._compute_loss(replay_data)

            self.policy.optimizer.zero_grad()
            loss.backward()
            # Clip gradient norm
            th.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
            self.policy.optimizer.step()

            if prioritized:
                assert isinstance(self.replay_buffer, PrioritizedRecurrentReplayBuffer)
                assert replay_data.leaf_indices is not None
                priorities = self.replay_buffer.window_priorities(current_q_values, target, replay_data.mask)
                self.replay_buffer.update_priorities(replay_data.leaf_indices, priorities.cpu().numpy())

            with th.no_grad():
                mask = replay_data.mask
                stats.append(th.stack([loss.detach(), (current_q_values * mask).sum(), mask.sum()]))

        # Increase update counter
        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if stats:
            # Per gradient step: the loss, the mean Q-value of the valid steps, the fraction of valid steps
            loss, q_sum, n_valid = th.stack(stats).T
            means = th.stack([loss, q_sum / n_valid.clamp(min=1.0), n_valid / mask.numel()]).mean(dim=1).tolist()
            self.logger.record("train/loss", means[0])
            self.logger.record("train/q_mean", means[1])
            self.logger.record("train/valid_step_fraction", means[2])
        if prioritized:
            self.logger.record("train/importance_sampling_exponent", beta)

    def recurrent_staleness(self, n_windows: int | None = None) -> float | None:
        """
        R2D2's measure of recurrent-state staleness (:func:`~sb3_drqn.drqn.staleness.recurrent_staleness`) on
        ``n_windows`` windows (default: ``staleness_windows``) sampled with their own generator (training's random
        draws do not change). Logged as ``train/recurrent_staleness`` when the logs are written, measured again
        once ``staleness_interval`` env steps have passed since the last measure (its cost per env step is bounded).

        :param n_windows: Number of windows
        :return: The mean relative difference, or ``None`` when no window has its episode start available
        """
        rng = np.random.default_rng(self._n_updates)
        n_windows = self.staleness_windows if n_windows is None else n_windows
        self.policy.set_training_mode(False)
        stored = self.recurrent_init == "stored"
        return recurrent_staleness(
            self.q_net, self.replay_buffer, n_windows, self.staleness_horizon, stored, rng, self._vec_normalize_env
        )

    def dump_logs(self) -> None:
        if self.num_timesteps >= self.learning_starts and self.num_timesteps >= self._next_staleness_step:
            self._staleness = self.recurrent_staleness()
            self._next_staleness_step = self.num_timesteps + self.staleness_interval
        if self._staleness is not None:
            self.logger.record("train/recurrent_staleness", self._staleness)
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

    def _replay_buffer_settings(self) -> dict[str, Any]:
        """The replay buffer's arguments that are the model's settings (``buffer_size``: the smallest that works)."""
        assert self.replay_buffer_class is not None and issubclass(self.replay_buffer_class, RecurrentReplayBuffer)
        settings: dict[str, Any] = dict(
            buffer_size=self.replay_buffer_class.min_buffer_size(self.n_envs, self.sequence_length, self.burn_in),
            observation_space=self.observation_space,
            action_space=self.action_space,
            n_envs=self.n_envs,
            sequence_length=self.sequence_length,
            burn_in=self.burn_in,
            recurrent_state_shape=self.policy.recurrent_state_shape if self.recurrent_init == "stored" else None,
        )
        if issubclass(self.replay_buffer_class, PrioritizedRecurrentReplayBuffer):
            settings.update(priority_exponent=self.priority_exponent, priority_eta=self.priority_eta)
        return settings

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "q_net", "q_net_target", "_next_recurrent_state"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]

        return state_dicts, []
