"""Recurrent layers: RNN and LSTM over time-major sequences, and LSTMUnit, the one LSTM step.

Caffe unrolls RNN and LSTM into an inner net of InnerProduct, Scale, Eltwise and TanH/LSTMUnit layers; the
parameters are that net's, in its order and shapes, so released caffemodels load unchanged:

* RNN: ``W_xh (H, I)``, ``b_h (H,)``, [``W_xh_static (H, S)``], ``W_hh (H, H)``, ``W_ho (H, H)``, ``b_o (H,)``;
  ``h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])``, ``o_t = tanh(W_ho h_t + b_o)``.
* LSTM: ``W_xc (4H, I)``, ``b_c (4H,)``, [``W_xc_static (4H, S)``], ``W_hc (4H, H)``; gates in the order i, f, o, g.

Bottoms: ``x (T, N, ...)``, ``cont (T, N)`` (0 starts a new sequence in that stream: the previous hidden
state is multiplied by it, and the LSTM forget gate is 0), an optional static input ``(N, ...)``, and with
``expose_hidden`` the initial states ``(1, N, H)``, which then also come out as extra tops. Without
expose_hidden the state carries over from one forward to the next (zeros at first), as Caffe copies its
last step into the first. As in Caffe, no gradient crosses the exposed states (they are shared by data
only), ``cont`` gets none, and T is fixed when the net is built.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from runner.layers.base import Layer, ParamSpec, Shape
from runner.registry import register

_CONT_REFUSAL = "Cannot backpropagate to sequence indicators. ({}: Check failed: !propagate_down[{}])"


class _LSTMStep(torch.autograd.Function):
    """One LSTM step, Caffe's LSTMUnit: ``c = f*c_prev + i*g``, ``h = o*tanh(c)`` with
    ``f = cont ? cont*sigmoid(x_f) : 0``, and Caffe's backward, whose forget-gate term
    ``f*(1 - f)`` is the sigmoid's derivative only for a cont of 0 or 1, as in Caffe."""

    @staticmethod
    def forward(ctx: Any, c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        i, f, o, g = gates.chunk(4, dim=-1)
        i, o, g = torch.sigmoid(i), torch.sigmoid(o), torch.tanh(g)
        cont = cont.unsqueeze(-1)
        f = torch.where(cont == 0, 0.0, cont * torch.sigmoid(f))
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, o * tanh_c

    @staticmethod
    def backward(ctx: Any, grad_c: torch.Tensor, grad_h: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        c_term = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
        gates = torch.cat([c_term * g * i * (1 - i), c_term * c_prev * f * (1 - f),
                           grad_h * tanh_c * o * (1 - o), c_term * i * (1 - g * g)], dim=-1)
        return c_term * f, gates, None


@register("LSTMUnit")
class LSTMUnit(Layer):
    """One LSTM step: bottoms ``c_prev (1, N, H)``, gate inputs ``(1, N, 4H)`` (i, f, o, g), ``cont (1, N)``;
    tops ``c (1, N, H)`` and ``h (1, N, H)``. ``cont`` gets no gradient."""

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(3, 3, bottom_shapes)
        c_prev, gates, cont = (tuple(s) for s in bottom_shapes)
        if len(c_prev) != 3 or c_prev[0] != 1 or gates != c_prev[:2] + (4 * c_prev[2],) or cont != c_prev[:2]:
            raise ValueError(f"layer '{self.name}' (LSTMUnit): bottoms must be c_prev (1, N, H), gate inputs "
                             f"(1, N, 4H) and cont (1, N); got {c_prev}, {gates}, {cont}")
        return [c_prev, c_prev]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.top_shapes([tuple(b.shape) for b in bottoms], ())
        return list(_LSTMStep.apply(bottoms[0], bottoms[1], bottoms[2].detach()))

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        return _CONT_REFUSAL.format("lstm_unit_layer.cpp", 2) if propagate_down[2] else None


class _Recurrent(Layer):
    """What RNN and LSTM share: bottoms and tops, parameter layout, the carried state, the time loop's
    frame. Subclasses give the state names, the gate width and one step."""

    traceable = False  # the state carried between forwards is not part of a traced function
    #: The hidden state blobs (h for RNN; h and c for LSTM), as exposed bottoms and tops.
    state_names: Tuple[str, ...] = ()
    #: Rows of the input transforms per hidden unit (4 for the LSTM's four gates).
    gate_width = 1

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.p = layer_param.recurrent_param
        if self.p.num_output <= 0:
            raise ValueError(f"layer '{self.name}' ({self.type}): recurrent_param.num_output must be positive")
        self.hidden = int(self.p.num_output)
        self.exposed = len(self.state_names) if self.p.expose_hidden else 0
        self.steps: Optional[int] = None  # T, fixed at setup as in Caffe
        self._carried: Optional[List[torch.Tensor]] = None

    def _error(self, message: str) -> ValueError:
        return ValueError(f"layer '{self.name}' ({self.type}): {message}")

    def _has_static(self, num_bottoms: int) -> bool:
        """Whether the bottoms include the static input (Caffe: more than x, cont and the exposed states)."""
        if not 2 + self.exposed <= num_bottoms <= 3 + self.exposed:
            states = f", then the {self.exposed} exposed states" if self.exposed else ""
            raise self._error(f"takes x, cont and an optional static input{states}: {2 + self.exposed} or "
                              f"{3 + self.exposed} bottoms, got {num_bottoms}")
        return num_bottoms == 3 + self.exposed

    def _check(self, bottom_shapes: Sequence[Shape]) -> Tuple[int, int, bool]:
        """T, N and whether a static input is given, after Caffe's checks."""
        static = self._has_static(len(bottom_shapes))
        x, cont = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(x) < 2 or cont != x[:2]:
            raise self._error(f"x must be (T, N, ...) and cont (T, N); got shapes {x} and {cont}")
        steps, streams = x[:2]
        if self.steps is not None and steps != self.steps:
            raise self._error(f"input number of timesteps changed: {steps}, the net was built for {self.steps}")
        if static and (len(bottom_shapes[2]) < 1 or bottom_shapes[2][0] != streams):
            raise self._error(f"the static input must be (N, ...) with N = {streams}, got {tuple(bottom_shapes[2])}")
        for shape in bottom_shapes[2 + static:]:
            if tuple(shape) != (1, streams, self.hidden):
                raise self._error(f"exposed hidden states must be (1, {streams}, {self.hidden}), got {tuple(shape)}")
        return steps, streams, static

    def param_specs(self, bottom_shapes: Sequence[Shape]) -> List[ParamSpec]:
        self.steps, _, static = self._check(bottom_shapes)
        rows = self.gate_width * self.hidden
        weight, bias = self.p.weight_filler, self.p.bias_filler
        specs = [ParamSpec((rows, math.prod(bottom_shapes[0][2:])), weight), ParamSpec((rows,), bias)]
        if static:
            specs.append(ParamSpec((rows, math.prod(bottom_shapes[2][1:])), weight))
        return specs + self.recurrent_specs()

    def recurrent_specs(self) -> List[ParamSpec]:
        """The parameters after the input transforms (RNN: W_hh, W_ho, b_o; LSTM: W_hc)."""
        raise NotImplementedError

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        steps, streams, _ = self._check(bottom_shapes)
        if len(self.layer_param.top) != 1 + self.exposed:
            raise self._error(f"makes {1 + self.exposed} tops, the prototxt names {len(self.layer_param.top)}")
        return [(steps, streams, self.hidden)] + [(1, streams, self.hidden)] * self.exposed

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def backward_refusal(self, propagate_down: Sequence[bool]) -> Optional[str]:
        return _CONT_REFUSAL.format("recurrent_layer.cpp", 1) if propagate_down[1] else None

    def _initial_state(self, bottoms: List[torch.Tensor], static: bool, streams: int,
                       like: torch.Tensor) -> List[torch.Tensor]:
        """The exposed states given as bottoms, else the last forward's final states (zeros at first, or
        when N or the device changed), each ``(N, H)`` and outside autograd."""
        if self.exposed:
            return [b.detach().reshape(streams, self.hidden) for b in bottoms[2 + static:]]
        carried = self._carried
        if carried is None or carried[0].shape[0] != streams or carried[0].device != like.device:
            carried = [like.new_zeros((streams, self.hidden)) for _ in self.state_names]
        return carried

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        steps, streams, static = self._check([tuple(b.shape) for b in bottoms])
        x = bottoms[0].reshape(steps, streams, -1)
        cont = bottoms[1].detach()
        inputs = F.linear(x, params[0], params[1])
        if static:
            inputs = inputs + F.linear(bottoms[2].reshape(streams, -1), params[2])
        state = self._initial_state(bottoms, static, streams, x)
        outputs, state = self.unroll(inputs, cont, state, params[2 + static:])
        final = [s.detach() for s in state]
        if not x.is_meta and not self.exposed:
            self._carried = final
        return [outputs] + [s.reshape(1, streams, self.hidden) for s in final[:self.exposed]]

    def unroll(self, inputs: torch.Tensor, cont: torch.Tensor, state: List[torch.Tensor],
               params: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The sequence output ``(T, N, H)`` and the final states, from the transformed inputs
        ``(T, N, gate_width*H)`` (bias and static input included) and the recurrent parameters."""
        raise NotImplementedError


@register("RNN")
class RNN(_Recurrent):
    """Elman network with tanh units and a tanh output layer (see the module docstring)."""

    state_names = ("h",)

    def recurrent_specs(self) -> List[ParamSpec]:
        square = (self.hidden, self.hidden)
        return [ParamSpec(square, self.p.weight_filler), ParamSpec(square, self.p.weight_filler),
                ParamSpec((self.hidden,), self.p.bias_filler)]

    def unroll(self, inputs: torch.Tensor, cont: torch.Tensor, state: List[torch.Tensor],
               params: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        w_hh, w_ho, b_o = params
        (h,) = state
        hidden = []
        for t in range(inputs.shape[0]):
            h = torch.tanh(F.linear(h * cont[t].unsqueeze(-1), w_hh) + inputs[t])
            hidden.append(h)
        return torch.tanh(F.linear(torch.stack(hidden), w_ho, b_o)), [h]


@register("LSTM")
class LSTM(_Recurrent):
    """Long short-term memory without peepholes, gates i, f, o, g (see the module docstring); the
    sequence output is h."""

    state_names = ("h", "c")
    gate_width = 4

    def recurrent_specs(self) -> List[ParamSpec]:
        return [ParamSpec((4 * self.hidden, self.hidden), self.p.weight_filler)]

    def unroll(self, inputs: torch.Tensor, cont: torch.Tensor, state: List[torch.Tensor],
               params: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        (w_hc,) = params
        h, c = state
        hidden = []
        for t in range(inputs.shape[0]):
            gates = F.linear(h * cont[t].unsqueeze(-1), w_hc) + inputs[t]
            c, h = _LSTMStep.apply(c, gates, cont[t])
            hidden.append(h)
        return torch.stack(hidden), [h, c]
