import functools
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    create_mlp,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_drqn.common.type_aliases import NumpyRecurrentState, RecurrentReplayBufferSamples, RecurrentState
from sb3_drqn.common.utils import first_array

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU}
# Observation spaces SB3's preprocessing handles (and Dicts of them, with MultiInputLstmPolicy)
SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def check_observation_space_type(observation_space: spaces.Space) -> None:
    """
    Raise a ValueError when SB3's preprocessing cannot handle the observation space.

    :param observation_space: The (possibly Dict) observation space
    """
    supported = "Box, Discrete, MultiDiscrete or MultiBinary"
    if isinstance(observation_space, spaces.Dict):
        for key, subspace in observation_space.spaces.items():
            if not isinstance(subspace, SUPPORTED_OBSERVATION_SPACES):
                raise ValueError(
                    f"The observation space's entry {key!r} is a {type(subspace).__name__} space ({subspace}), "
                    f"which is not supported: each Dict entry must be a {supported} space."
                )
    elif not isinstance(observation_space, SUPPORTED_OBSERVATION_SPACES):
        raise ValueError(
            f"The observation space {observation_space} is not supported: use a {supported} space, or a Dict of them "
            "with MultiInputLstmPolicy."
        )


def check_observation_space(
    observation_space: spaces.Space, features_extractor_class: type[BaseFeaturesExtractor], policy_name: str
) -> None:
    """
    Raise a ValueError naming the problem when the observation space cannot be handled by the policy.

    :param observation_space: The (possibly Dict) observation space
    :param features_extractor_class: The policy's features extractor
    :param policy_name: The policy's name, for the message
    """
    check_observation_space_type(observation_space)
    is_dict = isinstance(observation_space, spaces.Dict)
    if is_dict and issubclass(features_extractor_class, FlattenExtractor | NatureCNN):
        raise ValueError(
            f"{policy_name} cannot handle the Dict observation space {observation_space}: use MultiInputLstmPolicy."
        )
    if not is_dict and issubclass(features_extractor_class, CombinedExtractor):
        raise ValueError(
            f"{policy_name} needs a Dict observation space, got {observation_space}: use MlpLstmPolicy "
            "(or CnnLstmPolicy for images)."
        )


class DuelingHead(nn.Module):
    """
    Dueling Q-value head (Wang et al. 2016, used by R2D2): a value stream and an advantage stream, each an MLP
    with the layers ``net_arch``, combined as ``Q = V + A - mean(A)`` over the actions.

    :param input_dim: Size of the input (the recurrent layer's output)
    :param n_actions: Number of actions
    :param net_arch: Hidden layers of each stream
    :param activation_fn: Activation function
    """

    def __init__(self, input_dim: int, n_actions: int, net_arch: list[int], activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.value_net = nn.Sequential(*create_mlp(input_dim, 1, net_arch, activation_fn))
        self.advantage_net = nn.Sequential(*create_mlp(input_dim, n_actions, net_arch, activation_fn))

    def forward(self, features: th.Tensor) -> th.Tensor:
        advantages = self.advantage_net(features)
        return self.value_net(features) + advantages - advantages.mean(dim=-1, keepdim=True)


@contextmanager
def native_cpu_rnn(device: th.device, n_steps: int) -> Iterator[None]:
    """
    Run a one-step ``nn.LSTM`` / ``nn.GRU`` call on PyTorch's native CPU kernels rather than oneDNN's: with torch
    2.13, one LSTM step of 512 units for one env is about 4x faster natively (oneDNN reorders the weights on every
    call), and acting does one step per env step. Calls over several steps keep oneDNN, which is 1.4-3.3x faster
    there (forward and backward of 16 steps x 4 sequences x 64 units: 3.7 against 12.5 ms on a busy machine).
    Measured by ``benchmarks/throughput.py`` (its kernel part). Other layers (the CNN) keep oneDNN.

    :param device: The device the recurrent layer runs on: nothing changes off the CPU
    :param n_steps: Number of time steps of the call: only one-step calls change
    """
    if n_steps != 1 or device.type != "cpu" or not th._C._get_mkldnn_enabled():
        yield
        return
    # th.backends.mkldnn.flags() does the same with more work (it is entered on every acting step)
    th._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        th._C._set_mkldnn_enabled(True)


@functools.cache
def _saturating_column(rnn_type: str, hidden_size: int, dtype: th.dtype, device: th.device) -> th.Tensor:
    """
    The input weights of :meth:`RecurrentQNetwork._held_rnn`'s extra input (made once per shape, never changed): they
    saturate an LSTM's input gate to 0 and forget gate to 1, a GRU's update gate to 1 (gate order of ``nn.LSTM``:
    input, forget, cell, output; of ``nn.GRU``: reset, update, new).
    """
    with th.inference_mode(False), th.no_grad():  # a plain tensor, whichever mode the first call is made in
        saturate = th.zeros((4 if rnn_type == "lstm" else 3) * hidden_size, 1, dtype=dtype, device=device)
        if rnn_type == "lstm":
            saturate[:hidden_size] = -1e4
        saturate[hidden_size : 2 * hidden_size] = 1e4
    return saturate


def _to_device(array: np.ndarray, like: th.Tensor, dtype: th.dtype | None = None) -> th.Tensor:
    """A small NumPy array built on the host (an index or a mask), as a tensor on ``like``'s device, of ``like``'s
    dtype unless ``dtype`` is given."""
    return th.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=like.dtype if dtype is None else dtype)


class RecurrentQNetwork(BasePolicy):
    """
    Recurrent action-value network: features extractor, recurrent layer (LSTM or GRU), then an MLP head.

    Sequences are time-major (``time, batch, ...``) and the recurrent state is a tuple with one tensor per
    component (``(h, c)`` for an LSTM, ``(h,)`` for a GRU), each ``(n_layers, batch, hidden_size)``.

    :param observation_space: Observation space
    :param action_space: Action space
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param lstm_hidden_size: Number of units of the recurrent layer (``None``: ``default_lstm_hidden_size``, 64;
        512 for :class:`CnnLstmPolicy`)
    :param n_lstm_layers: Number of recurrent layers
    :param rnn_type: ``"lstm"`` or ``"gru"``
    :param net_arch: Layers of the MLP head after the recurrent layer
    :param activation_fn: Activation function of the head
    :param normalize_images: Whether to normalize images or not, dividing by 255.0 (True by default)
    :param dueling: Use a dueling head (value and advantage streams, each with the layers ``net_arch``)
    :param normalize_features: Normalise the features (``nn.LayerNorm``) before the recurrent layer
    """

    action_space: spaces.Discrete

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        lstm_hidden_size: int = 128,
        n_lstm_layers: int = 1,
        rnn_type: str = "lstm",
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        dueling: bool = False,
        normalize_features: bool = False,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = []
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        # int(): SB3 computes the size of MultiDiscrete observations as a NumPy integer, which nn.LSTM refuses
        self.features_dim = int(features_dim)
        self.lstm_hidden_size = lstm_hidden_size
        self.n_lstm_layers = n_lstm_layers
        self.rnn_type = rnn_type
        self.rnn = RNN_TYPES[rnn_type](self.features_dim, lstm_hidden_size, num_layers=n_lstm_layers)
        self.dueling = dueling
        self.q_net: nn.Module
        if dueling:
            self.q_net = DuelingHead(lstm_hidden_size, int(self.action_space.n), net_arch, activation_fn)
        else:
            self.q_net = nn.Sequential(*create_mlp(lstm_hidden_size, int(self.action_space.n), net_arch, activation_fn))
        self.features_norm = nn.LayerNorm(self.features_dim) if normalize_features else None
        self.features_extractor_is_cheap = next(iter(features_extractor.parameters()), None) is None
        # SB3's preprocess_obs decides on every call whether a Box is an image (comparing all its bounds with 0 and
        # 255 for image shapes): decided once here for Box spaces (None: other spaces, left to SB3)
        space = self.observation_space
        self._scale_box: bool | None = (
            bool(self.normalize_images and is_image_space(space)) if isinstance(space, spaces.Box) else None
        )
        self._flatten_box = bool(self._scale_box is not None and space.shape and type(features_extractor) is FlattenExtractor)

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> th.Tensor:
        """
        SB3's ``extract_features`` (preprocessing, then the extractor), with the image test made once, then the
        features' normalisation where there is one (``normalize_features``).
        """
        if self._scale_box is None or not isinstance(obs, th.Tensor):
            features = super().extract_features(obs, features_extractor)
        else:
            obs = obs.float() / 255.0 if self._scale_box else obs.float()
            # SB3's FlattenExtractor (no parameters): the same values without the module call
            flatten = self._flatten_box and features_extractor is self.features_extractor
            features = obs.flatten(1) if flatten else features_extractor(obs)
        return features if self.features_norm is None else self.features_norm(features)

    @property
    def device(self) -> th.device:
        """The device of the network (read from the recurrent layer, not by walking every parameter as SB3 does)."""
        return self.rnn.weight_hh_l0.device

    @property
    def rnn_weights(self) -> list[th.Tensor]:
        """
        The recurrent layer's weights in its kernels' order (layer by layer: input, hidden, their biases): the list
        ``nn.LSTM``/``nn.GRU`` keep current for their own calls (``all_weights`` rebuilds it by name, about 10 us).
        """
        return self.rnn._flat_weights  # type: ignore[return-value]

    @property
    def n_state_components(self) -> int:
        """2 for an LSTM (``h``, ``c``), 1 for a GRU (``h``)."""
        return 2 if self.rnn_type == "lstm" else 1

    def initial_state(self, n_envs: int) -> RecurrentState:
        """
        :param n_envs: Batch size
        :return: The zero recurrent state
        """
        zeros = th.zeros(self.n_lstm_layers, n_envs, self.lstm_hidden_size, device=self.device)
        return tuple(zeros.clone() for _ in range(self.n_state_components))

    def _run_rnn(self, features: th.Tensor | nn.utils.rnn.PackedSequence, state: RecurrentState) -> tuple[Any, RecurrentState]:
        n_steps = features.shape[0] if isinstance(features, th.Tensor) else len(features.batch_sizes)
        if n_steps == 1 and self.n_lstm_layers == 1 and isinstance(features, th.Tensor) and features.device.type == "cpu":
            # One step (acting): the cell function, which the native kernels run per step anyway (bit-identical
            # results), without their per-call work: 43 against 58 us for 8 envs and an LSTM of 64
            weight_ih, weight_hh, bias_ih, bias_hh = self.rnn_weights[:4]
            if self.rnn_type == "lstm":
                hidden, cell = th.lstm_cell(features[0], (state[0][0], state[1][0]), weight_ih, weight_hh, bias_ih, bias_hh)
                return hidden.unsqueeze(0), (hidden.unsqueeze(0), cell.unsqueeze(0))
            hidden = th.gru_cell(features[0], state[0][0], weight_ih, weight_hh, bias_ih, bias_hh).unsqueeze(0)
            return hidden, (hidden,)
        with native_cpu_rnn(state[0].device, n_steps):
            if isinstance(features, th.Tensor):
                # The recurrent layer's own kernel, without nn.LSTM.forward's per-call checks of its arguments and
                # weights (about half the time of a one-step call); packed sequences go through the module
                weights = self.rnn_weights
                args = (True, self.n_lstm_layers, 0.0, self.training, False, False)
                if self.rnn_type == "lstm":
                    output, hidden, cell = th.lstm(features, (state[0], state[1]), weights, *args)
                    return output, (hidden, cell)
                output, hidden = th.gru(features, state[0], weights, *args)
                return output, (hidden,)
            if self.rnn_type == "lstm":
                output, (hidden, cell) = self.rnn(features, (state[0].contiguous(), state[1].contiguous()))
                return output, (hidden, cell)
            output, hidden = self.rnn(features, state[0].contiguous())
            return output, (hidden,)

    def extract_sequence_features(self, obs: PyTorchObs) -> th.Tensor:
        """
        Run the features extractor over every step of a batch of sequences in one call.

        :param obs: Time-major observations ``(time, batch, *obs_shape)`` (or a dict of them)
        :return: Features ``(time, batch, features_dim)``
        """
        if isinstance(obs, dict):
            leading = first_array(obs).shape[:2]
            flat_obs: PyTorchObs = {key: value.flatten(0, 1) for key, value in obs.items()}
        else:
            leading = obs.shape[:2]
            flat_obs = obs.flatten(0, 1)
        features = self.extract_features(flat_obs, self.features_extractor)
        return features.reshape(*leading, -1)

    def q_values_from_features(self, features: th.Tensor, state: RecurrentState) -> tuple[th.Tensor, RecurrentState]:
        """
        Q-values of a batch of sequences that contain no episode start after their first step:
        the whole sequence goes through the recurrent layer in one call.

        :param features: ``(time, batch, features_dim)``
        :param state: Recurrent state before the first step
        :return: Q-values ``(time, batch, n_actions)`` and the state after the last step
        """
        output, state = self._run_rnn(features, state)
        return self.q_net(output), state

    def burn_in(self, features: th.Tensor, state: RecurrentState, lengths: th.Tensor) -> RecurrentState:
        """
        Advance the recurrent state over left-aligned burn-in steps of different lengths, in one call.

        :param features: ``(max_burn_in, batch, features_dim)``; sequence ``i`` uses its first ``lengths[i]`` steps
        :param state: Recurrent state before the first burn-in step
        :param lengths: ``(batch,)`` number of burn-in steps of each sequence (may be 0), on the CPU
        :return: The state after each sequence's burn-in
        """
        n_steps, counts = features.shape[0], lengths.numpy()  # the tests below in NumPy: no tensor operation each
        if n_steps == 0 or not (counts > 0).any():
            return state
        if (counts == n_steps).all():
            return self._run_rnn(features, state)[1]
        if self.n_lstm_layers > 1:
            # Lower layers' per-step states are not returned: the packed call (native kernels) stops each sequence
            packed = nn.utils.rnn.pack_padded_sequence(features, lengths.clamp(min=1).cpu(), enforce_sorted=False)
            new_state = self._run_rnn(packed, state)[1]
        else:
            new_state = self._ragged_burn_in(features, state, lengths)
        if counts.all():
            return new_state
        has_burn_in = th.from_numpy(counts > 0).to(self.device).view(1, -1, 1)
        return tuple(th.where(has_burn_in, new, old) for new, old in zip(new_state, state, strict=True))

    def _ragged_burn_in(self, features: th.Tensor, state: RecurrentState, lengths: th.Tensor) -> RecurrentState:
        """
        :meth:`burn_in` of a one-layer network as one plain call over every row (oneDNN's kernels take no packed
        sequence, and run small networks 2-4x faster than a packed call; ``benchmarks/throughput.py``, kernel part):
        the rows after each sequence's burn-in hold the state (:meth:`_held_rnn`), and an LSTM's ``h`` is read
        from the output of step ``lengths[i] - 1``. Sequences with ``lengths[i] == 0`` get a meaningless state
        here (:meth:`burn_in` keeps theirs).
        """
        n_steps, counts = features.shape[0], lengths.numpy()
        hold = np.arange(n_steps)[:, None] >= counts[None, :]
        output, new_state = self._held_rnn(features, _to_device(hold, features), state)
        if self.rnn_type == "gru":
            return new_state
        last_rows = np.broadcast_to(np.maximum(counts - 1, 0)[None, :, None], (1, len(counts), self.lstm_hidden_size))
        return output.gather(0, _to_device(last_rows, output, dtype=th.int64)), new_state[1]

    def _held_rnn(self, features: th.Tensor, hold: th.Tensor, state: RecurrentState) -> tuple[th.Tensor, RecurrentState]:
        """
        One plain call of a one-layer recurrent layer in which the rows where ``hold`` is 1 keep the state: they get
        one more input, 1, whose weights saturate gates (sigmoid of +-1e4 is exactly 1 and 0 in float32). An LSTM's
        forget gate is 1 and input gate 0, so its cell state ``c`` is kept exactly, but its ``h`` (the output gate
        times ``tanh(c)``) is only kept where ``c`` and ``h`` are zero; a GRU's update gate is 1, so its state is
        kept exactly.

        :param features: ``(time, batch, features_dim)``
        :param hold: ``(time, batch)``, 1 where the state is held, else 0
        :param state: Recurrent state before the first step
        :return: The output ``(time, batch, hidden)`` and the state after the last step
        """
        saturate = _saturating_column(self.rnn_type, self.lstm_hidden_size, features.dtype, features.device)
        weight_ih, *other_weights = self.rnn_weights[:4]
        weights = [th.cat([weight_ih, saturate], dim=1), *other_weights]
        inputs = th.cat([features, hold.unsqueeze(-1)], dim=-1)
        args = (True, 1, 0.0, self.training, False, False)
        with native_cpu_rnn(features.device, features.shape[0]):
            if self.rnn_type == "lstm":
                output, hidden_state, cell = th.lstm(inputs, (state[0], state[1]), weights, *args)
                return output, (hidden_state, cell)
            output, hidden_state = th.gru(inputs, state[0], weights, *args)
            return output, (hidden_state,)

    def burn_in_features(self, obs: PyTorchObs, lengths: th.Tensor) -> th.Tensor:
        """
        Features of left-aligned burn-in observations of different lengths: only the valid steps go through a
        features extractor with parameters (a CNN), the others are zeros. An extractor without parameters (SB3's
        ``FlattenExtractor``) takes every step: cheaper than selecting, and the callers ignore the other steps.

        :param obs: Time-major observations ``(max_burn_in, batch, *obs_shape)`` (or a dict of them)
        :param lengths: ``(batch,)`` number of burn-in steps of each sequence (may be 0), on the CPU
        :return: ``(max_burn_in, batch, features_dim)``
        """
        n_steps = first_array(obs).shape[0]
        if self.features_extractor_is_cheap:
            return self.extract_sequence_features(obs)
        valid_steps = np.arange(n_steps)[:, None] < lengths.numpy()[None, :]
        if valid_steps.all():  # on the host: no wait for the device
            return self.extract_sequence_features(obs)
        valid = th.from_numpy(valid_steps).to(self.device)
        selected: PyTorchObs = {key: value[valid] for key, value in obs.items()} if isinstance(obs, dict) else obs[valid]
        valid_features = self.extract_features(selected, self.features_extractor)
        features = valid_features.new_zeros((*valid.shape, valid_features.shape[-1]))
        features[valid] = valid_features
        return features

    def burn_in_observations(self, obs: PyTorchObs, state: RecurrentState, lengths: th.Tensor) -> RecurrentState:
        """
        Advance the recurrent state over left-aligned burn-in observations of different lengths
        (:meth:`burn_in_features`, then all sequences through the recurrent layer in one call).

        :param obs: Time-major observations ``(max_burn_in, batch, *obs_shape)`` (or a dict of them)
        :param state: Recurrent state before the first burn-in step
        :param lengths: ``(batch,)`` number of burn-in steps of each sequence (may be 0), on the CPU
        :return: The state after each sequence's burn-in
        """
        n_steps = first_array(obs).shape[0]
        if n_steps == 0 or not (lengths.numpy() > 0).any():
            return state
        return self.burn_in(self.burn_in_features(obs, lengths), state, lengths)

    def window_q_values(
        self, windows: RecurrentReplayBufferSamples, state: RecurrentState, one_call: bool = False
    ) -> th.Tensor:
        """
        Q-values of sampled windows, as the learner sees them: the burn-in (without gradient) from ``state``, then
        the learning steps and the step after them through the recurrent layer in one call. With ``one_call``
        (only without gradient, e.g. for the target network), burn-in and learning steps go through the recurrent
        layer together, in one call, where every window's burn-in is full or the shorter ones can be right-aligned
        exactly (``_right_aligned_q_values``).

        :param windows: Windows sampled from a :class:`~sb3_drqn.common.buffers.RecurrentReplayBuffer`
        :param state: Recurrent state before each window's first burn-in step
        :param one_call: One recurrent call for burn-in and learning steps where that is exact (requires no
            gradient)
        :return: ``(L + 1, batch, n_actions)``
        """
        lengths, n_burn_in = windows.burn_in_lengths, windows.n_burn_in_rows
        assert not (one_call and th.is_grad_enabled()), "one_call runs burn-in and learning steps together: no gradient"
        if one_call and n_burn_in > 0:
            counts = lengths.numpy()
            if (counts == n_burn_in).all():
                output, _ = self._run_rnn(self.extract_sequence_features(windows.observations), state)
                return self.q_net(output[n_burn_in:])
            if self._can_hold_before(counts < n_burn_in, state):
                return self._right_aligned_q_values(windows, state)
        with th.no_grad():
            state = self.burn_in_observations(windows.burn_in_observations(), state, lengths)
        q_values, _ = self.q_values_from_features(self.extract_sequence_features(windows.learning_observations()), state)
        return q_values

    def _can_hold_before(self, short: np.ndarray, state: RecurrentState) -> bool:
        """
        Whether :meth:`_held_rnn` can hold the state of the sequences ``short`` (a NumPy boolean mask) over rows
        placed before their first step: one layer, and a GRU, or an LSTM whose state there is zero (as it is at an
        episode start, where burn-ins are clipped).
        """
        if self.n_lstm_layers > 1:
            return False
        if self.rnn_type == "gru" or not short.any():
            return True
        if state[0].device.type == "cpu":  # read in place (NumPy): no tensor operation
            return not any(component.detach().numpy()[:, short].any() for component in state)
        mask = th.from_numpy(short).to(state[0].device)
        return all(bool((component[:, mask] == 0).all()) for component in state)

    def _right_aligned_q_values(self, windows: RecurrentReplayBufferSamples, state: RecurrentState) -> th.Tensor:
        """
        :meth:`window_q_values` in one recurrent call for windows whose burn-ins differ in length: each window's
        burn-in is moved to end right before its learning steps, and the rows before it hold the state
        (:meth:`_held_rnn`; see :meth:`_can_hold_before` for when this is exact).
        """
        n_burn_in, counts = windows.n_burn_in_rows, windows.burn_in_lengths.numpy()
        if self.features_extractor_is_cheap:
            features = self.extract_sequence_features(windows.observations)
        else:  # only the burn-in steps that exist go through the features extractor (as in burn_in_observations)
            burn_in_features = self.burn_in_features(windows.burn_in_observations(), windows.burn_in_lengths)
            features = th.cat([burn_in_features, self.extract_sequence_features(windows.learning_observations())])
        # Row r < n_burn_in of window i takes burn-in row r - (n_burn_in - lengths[i]), and is held where that is
        # before row 0; the learning rows stay where they are: one indexing call moves every row
        rows = np.arange(features.shape[0])[:, None] - (n_burn_in - counts)[None, :]
        rows[n_burn_in:] = np.arange(n_burn_in, features.shape[0])[:, None]
        hold = rows < 0
        columns = th.arange(len(counts), device=features.device)
        aligned = features[_to_device(np.maximum(rows, 0), features, dtype=th.int64), columns]
        output, _ = self._held_rnn(aligned, _to_device(hold, features), state)
        return self.q_net(output[n_burn_in:])

    def forward(self, obs: PyTorchObs, state: RecurrentState, episode_starts: th.Tensor) -> tuple[th.Tensor, RecurrentState]:
        """
        Q-values of a batch of sequences, resetting the state where an episode starts.

        The sequence is cut at the steps where some episode starts, and each piece goes through the
        recurrent layer in one call (a single call when no episode starts after the first step).

        :param obs: Time-major observations ``(time, batch, *obs_shape)``, or one step ``(batch, *obs_shape)``
        :param state: Recurrent state before the first step
        :param episode_starts: ``(time, batch)`` (or ``(batch,)`` for one step): 1 where a new episode starts,
            the state is reset to zeros before that step
        :return: Q-values ``(time, batch, n_actions)`` (or ``(batch, n_actions)``) and the final state
        """
        if episode_starts.dim() == 1:
            keep = (1.0 - episode_starts).view(1, -1, 1)
            return self.step(obs, tuple(component * keep for component in state))
        features = self.extract_sequence_features(obs)
        episode_starts = episode_starts.to(features.dtype)
        # Cut points: the first step, and every later step where an env starts an episode
        cuts = [0, features.shape[0]]
        if features.shape[0] > 1:
            later_starts = th.nonzero(episode_starts[1:].any(dim=1)).flatten() + 1
            cuts = [0, *later_starts.tolist(), features.shape[0]]
        q_values = []
        for begin, end in itertools.pairwise(cuts):
            keep = (1.0 - episode_starts[begin]).view(1, -1, 1)
            state = tuple(component * keep for component in state)
            q_piece, state = self.q_values_from_features(features[begin:end], state)
            q_values.append(q_piece)
        return th.cat(q_values), state

    def step(self, obs: PyTorchObs, state: RecurrentState) -> tuple[th.Tensor, RecurrentState]:
        """
        Q-values of one step of a batch of envs, continuing their state (no reset).

        :param obs: Observations ``(batch, *obs_shape)`` (or a dict of them)
        :param state: Recurrent state before the step
        :return: Q-values ``(batch, n_actions)`` and the state after the step
        """
        output, state = self._run_rnn(self.extract_features(obs, self.features_extractor).unsqueeze(0), state)
        return self.q_net(output[0]), state

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        """
        Greedy actions from the zero state, as if each observation started an episode. Use
        :meth:`RecurrentDQNPolicy.predict` with a state to act with memory.
        """
        n_envs = first_array(observation).shape[0]
        starts = th.ones(n_envs, device=self.device)
        q_values, _ = self(observation, self.initial_state(n_envs), starts)
        return q_values.argmax(dim=-1).reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                lstm_hidden_size=self.lstm_hidden_size,
                n_lstm_layers=self.n_lstm_layers,
                rnn_type=self.rnn_type,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
                dueling=self.dueling,
            )
        )
        return data


class RecurrentDQNPolicy(BasePolicy):
    """
    Policy class with a recurrent Q-network and its target network, for RecurrentDQN.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param lstm_hidden_size: Number of units of the recurrent layer (``None``: ``default_lstm_hidden_size``, 64;
        512 for :class:`CnnLstmPolicy`)
    :param n_lstm_layers: Number of recurrent layers
    :param rnn_type: ``"lstm"`` (default) or ``"gru"``
    :param net_arch: Layers of the MLP head after the recurrent layer (``None``: ``default_net_arch``, one layer of
        64 units; none for :class:`CnnLstmPolicy`, whose recurrent layer feeds a linear Q-value layer, as in the
        DRQN paper)
    :param activation_fn: Activation function
    :param dueling: Use a dueling head (R2D2): value and advantage streams, each with the layers ``net_arch``,
        combined as ``Q = V + A - mean(A)``
    :param normalize_features: Normalise the features extractor's output (``nn.LayerNorm``, with a gain and a
        bias) before the recurrent layer. For pixels: on CartPole's white frames a CNN's features grew large and
        alike, saturating the LSTM's gates, and the greedy action became the same on every frame
        (``examples/results/cartpole_pixels_diag``). Off by default: on MinAtar's frames (bright on black) it made
        the agent worse on all three games of ``benchmarks/minatar_suite.py``
    :param features_extractor_class: Features extractor to use (``None``: ``default_features_extractor_class``,
        ``FlattenExtractor``; ``NatureCNN`` for :class:`CnnLstmPolicy`, ``CombinedExtractor`` for
        :class:`MultiInputLstmPolicy`)
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor.
    :param normalize_images: Whether to normalize images or not, dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer.
        For Adam and AdamW, ``fused=True`` unless ``fused`` or ``foreach`` is given (``fused=False``: PyTorch's
        default implementation)
    """

    q_net: RecurrentQNetwork
    q_net_target: RecurrentQNetwork
    # What ``None`` stands for in the arguments of the same names (the subclasses for images and Dict spaces differ);
    # the sizes are the memory suite's generic setting (benchmarks/memory_suite.py), the image ones the DRQN paper's
    default_features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor
    default_lstm_hidden_size: int = 64
    default_net_arch: tuple[int, ...] = (64,)

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        lstm_hidden_size: int | None = None,
        n_lstm_layers: int = 1,
        rnn_type: str = "lstm",
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        dueling: bool = False,
        normalize_features: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        lstm_hidden_size = self.default_lstm_hidden_size if lstm_hidden_size is None else lstm_hidden_size
        features_extractor_class = features_extractor_class or self.default_features_extractor_class
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {sorted(RNN_TYPES)}, got {rnn_type!r}.")
        for name, value in (("lstm_hidden_size", lstm_hidden_size), ("n_lstm_layers", n_lstm_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if net_arch is not None and not all(isinstance(size, int) and size >= 1 for size in net_arch):
            raise ValueError(f"net_arch must be a list of positive layer sizes, got {net_arch!r}.")
        policy_name = "MlpLstmPolicy" if type(self) is RecurrentDQNPolicy else type(self).__name__
        check_observation_space(observation_space, features_extractor_class, policy_name)
        optimizer_kwargs = dict(optimizer_kwargs or {})
        if optimizer_class in (th.optim.Adam, th.optim.AdamW) and "foreach" not in optimizer_kwargs:
            # One kernel for all parameters instead of a dozen operations per tensor: 4x faster at CartPole sizes
            # on the CPU (0.22 against 0.93 ms per step for an LSTM of 64 and a [64] head)
            optimizer_kwargs.setdefault("fused", True)
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
        )
        self.net_arch = list(self.default_net_arch) if net_arch is None else net_arch
        self.activation_fn = activation_fn
        self.lstm_hidden_size = lstm_hidden_size
        self.n_lstm_layers = n_lstm_layers
        self.rnn_type = rnn_type
        self.net_args = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "lstm_hidden_size": lstm_hidden_size,
            "n_lstm_layers": n_lstm_layers,
            "rnn_type": rnn_type,
            "net_arch": self.net_arch,
            "activation_fn": self.activation_fn,
            "normalize_images": normalize_images,
            "dueling": dueling,
            "normalize_features": normalize_features,
        }
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        """
        Create the network, its target and the optimizer.

        :param lr_schedule: Learning rate schedule; ``lr_schedule(1)`` is the initial learning rate
        """
        try:
            self.q_net = self.make_q_net()
        except (AssertionError, RuntimeError) as error:
            # e.g. NatureCNN on vectors or on float images, or images too small for its kernels
            raise ValueError(
                f"{type(self).__name__} could not build its features extractor "
                f"({self.features_extractor_class.__name__}) for the observation space {self.observation_space}: "
                f"{error}"
            ) from error
        self.q_net_target = self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.q_net.parameters(),
            lr=lr_schedule(1),
            **self.optimizer_kwargs,
        )

    def make_q_net(self) -> RecurrentQNetwork:
        # Make sure we always have separate networks for features extractors etc
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return RecurrentQNetwork(**net_args).to(self.device)

    @property
    def recurrent_state_shape(self) -> tuple[int, int, int]:
        """``(n_components, n_layers, hidden_size)``: what the replay buffer stores per step."""
        return (self.q_net.n_state_components, self.n_lstm_layers, self.lstm_hidden_size)

    def forward(self, obs: PyTorchObs, state: RecurrentState, episode_starts: th.Tensor) -> tuple[th.Tensor, RecurrentState]:
        """Q-values of the online network, see :meth:`RecurrentQNetwork.forward`."""
        return self.q_net(obs, state, episode_starts)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self.q_net._predict(observation, deterministic=deterministic)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: NumpyRecurrentState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, NumpyRecurrentState]:
        """
        Greedy actions from observations and the recurrent state (RecurrentPPO's contract).

        :param observation: The input observation, ``(n_envs, *obs_shape)`` or a single one
        :param state: The recurrent state returned by the previous call, each component
            ``(n_layers, n_envs, hidden_size)``; ``None`` for zeros
        :param episode_start: ``(n_envs,)`` whether each observation starts an episode (the state of that env
            is reset first); ``None`` for all False
        :param deterministic: Unused: the policy is greedy (exploration lives in ``RecurrentDQN.predict``)
        :return: The actions and the next recurrent state
        """
        obs_tensor, vectorized_env = self._obs_batch(observation)
        n_envs = first_array(obs_tensor).shape[0]
        state_tensor = self._check_state(state, n_envs)
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts.shape[0] != n_envs:
                raise ValueError(f"episode_start has {starts.shape[0]} entries, but there are {n_envs} observations.")
            if starts.any():
                keep = th.as_tensor(~starts, dtype=th.float32, device=self.device).view(1, -1, 1)
                state_tensor = tuple(component * keep for component in state_tensor)
        actions, new_state = self._act(obs_tensor, state_tensor)
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, new_state

    def _obs_batch(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[PyTorchObs, bool]:
        """SB3's ``obs_to_tensor``, without its copy for a batch of Box observations in the space's own layout."""
        space = self.observation_space
        if isinstance(space, spaces.Box) and isinstance(observation, np.ndarray) and observation.shape[1:] == space.shape:
            return th.as_tensor(observation, device=self.device), True
        return self.obs_to_tensor(observation)

    def _act(self, obs: PyTorchObs, state: RecurrentState) -> tuple[np.ndarray, NumpyRecurrentState]:
        """Greedy actions of one step of every env and the next state (the learner's acting path: no checks)."""
        self.set_training_mode(False)
        with th.no_grad():
            q_values, new_state = self.q_net.step(obs, state)
            actions = q_values.argmax(dim=-1).cpu().numpy()
        return actions, tuple(component.cpu().numpy() for component in new_state)

    def _check_state(self, state: NumpyRecurrentState | None, n_envs: int) -> RecurrentState:
        if state is None:
            return self.q_net.initial_state(n_envs)
        expected = (self.n_lstm_layers, n_envs, self.lstm_hidden_size)
        n_components = self.q_net.n_state_components
        if (
            not isinstance(state, tuple | list)
            or len(state) != n_components
            or any(np.shape(component) != expected for component in state)
        ):
            shapes = [np.shape(component) for component in state] if isinstance(state, tuple | list) else type(state)
            raise ValueError(
                f"state must be a tuple of {n_components} array(s) of shape (n_layers, n_envs, hidden_size) = "
                f"{expected} for this {self.rnn_type.upper()} policy and {n_envs} observation(s), got {shapes}."
            )
        return tuple(th.as_tensor(np.asarray(component), dtype=th.float32, device=self.device) for component in state)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                lstm_hidden_size=self.lstm_hidden_size,
                n_lstm_layers=self.n_lstm_layers,
                rnn_type=self.rnn_type,
                net_arch=self.net_args["net_arch"],
                activation_fn=self.net_args["activation_fn"],
                dueling=self.net_args["dueling"],
                normalize_features=self.net_args["normalize_features"],
                lr_schedule=self._dummy_schedule,  # dummy lr schedule, not needed for loading policy alone
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the policy in either training or evaluation mode (affects batch norm / dropout).

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        # Only when it changes: nn.Module.train walks every module, and this is called on every step and update
        if self.training != mode or self.q_net.training != mode:
            self.q_net.set_training_mode(mode)
            self.training = mode

    @property
    def device(self) -> th.device:
        """The device of the networks (read from one parameter, not by walking them all as SB3 does)."""
        q_net = self._modules.get("q_net")
        return q_net.device if isinstance(q_net, RecurrentQNetwork) else super().device


MlpLstmPolicy = RecurrentDQNPolicy


class CnnLstmPolicy(RecurrentDQNPolicy):
    """
    Recurrent Q-policy for image observations: the Nature CNN features extractor and a 512-unit recurrent layer
    by default. See :class:`RecurrentDQNPolicy` for the parameters.
    """

    default_features_extractor_class = NatureCNN
    default_lstm_hidden_size = 512
    default_net_arch = ()


class MultiInputLstmPolicy(RecurrentDQNPolicy):
    """
    Recurrent Q-policy for Dict observations: the combined features extractor by default.
    See :class:`RecurrentDQNPolicy` for the parameters.
    """

    default_features_extractor_class = CombinedExtractor
