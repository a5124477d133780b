"""Environments of a user's own, for the tests of ``--env=gymnasium:<module>:<id>``,
``--env_module`` and the Python API's env objects. Importing it registers
``GoRight-v0`` with Gymnasium (README shows the same env)."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces


class GoRight(gymnasium.Env):
    """A corridor of 10 cells: +1 and the end at the right end, -0.01 per step."""

    observation_space = gymnasium.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)  # 0: left, 1: right

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.x = max(0, self.x + (1 if action == 1 else -1))
        done = self.x == 9
        return np.array([self.x / 9], np.float32), (1.0 if done else -0.01), done, False, {}


gymnasium.register(id="GoRight-v0", entry_point=GoRight, max_episode_steps=50)


@struct.dataclass
class CorridorState(environment.EnvState):
    x: jax.Array
    time: int


@struct.dataclass
class CorridorParams(environment.EnvParams):
    length: int = 10
    max_steps_in_episode: int = 50


class Corridor(environment.Environment):
    """GoRight as a gymnax environment (on device)."""

    @property
    def default_params(self) -> CorridorParams:
        return CorridorParams()

    def step_env(self, key, state, action, params):
        x = jnp.maximum(0, state.x + 2 * action - 1)
        terminated = x == params.length - 1
        reward = jnp.where(terminated, 1.0, -0.01)
        state = CorridorState(x=x, time=state.time + 1)
        return self.get_obs(state, params), state, reward, terminated, {}

    def reset_env(self, key, params):
        state = CorridorState(x=jnp.int32(0), time=0)
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None):
        length = 10 if params is None else params.length
        return jnp.array([state.x / (length - 1)], jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (1,), jnp.float32)
