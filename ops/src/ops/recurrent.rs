//! Fused LSTM and GRU layers (`torch.nn.LSTM` / `torch.nn.GRU`, one layer,
//! `batch_first`), each one op whose backward runs backpropagation through
//! time inside (see [`crate::kernels::recurrent`]).
use std::sync::Arc;

use crate::autograd::Backward;
use crate::kernels::recurrent::{
    GruCache, LstmCache, RecurrentWeights, gru_backward, gru_forward, lstm_backward, lstm_forward,
};
use crate::parallel::current_parallelism;
use crate::tensor::Tensor;

/// Which cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm_layer",
            Cell::Gru => "gru_layer",
        }
    }
}

/// (batch, time, input, hidden) after checking every shape.
#[track_caller]
fn layer_dims(
    cell: Cell,
    x: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: &Tensor,
    b_hh: &Tensor,
) -> (usize, usize, usize, usize) {
    let op = cell.name();
    assert_eq!(
        x.rank(),
        3,
        "{op}: x must be (batch, time, input), got {:?}",
        x.shape()
    );
    let (batch, time, input) = (x.dim(0), x.dim(1), x.dim(2));
    assert_eq!(
        w_hh.rank(),
        2,
        "{op}: weight_hh must be (gates * hidden, hidden)"
    );
    let hidden = w_hh.dim(1);
    let g = cell.gates() * hidden;
    assert_eq!(
        w_hh.dims(),
        [g, hidden],
        "{op}: weight_hh shape {:?}",
        w_hh.shape()
    );
    assert_eq!(
        w_ih.dims(),
        [g, input],
        "{op}: weight_ih shape {:?}",
        w_ih.shape()
    );
    assert_eq!(b_ih.dims(), [g], "{op}: bias_ih shape {:?}", b_ih.shape());
    assert_eq!(b_hh.dims(), [g], "{op}: bias_hh shape {:?}", b_hh.shape());
    (batch, time, input, hidden)
}

fn weights<'a>(
    w_ih: &'a Tensor,
    w_hh: &'a Tensor,
    b_ih: &'a Tensor,
    b_hh: &'a Tensor,
) -> RecurrentWeights<'a> {
    RecurrentWeights {
        w_ih: w_ih.data(),
        w_hh: w_hh.data(),
        b_ih: b_ih.data(),
        b_hh: b_hh.data(),
    }
}

/// One LSTM layer as `torch.nn.LSTM(batch_first=True)` with zero initial
/// states: `x` (batch, time, input), `w_ih` (4H, input), `w_hh` (4H, H),
/// `b_ih`, `b_hh` (4H), gate order i, f, g, o. Returns the hidden states
/// (batch, time, H).
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn lstm_layer(
    x: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: &Tensor,
    b_hh: &Tensor,
) -> Tensor {
    let dims = layer_dims(Cell::Lstm, x, w_ih, w_hh, b_ih, b_hh);
    let (out, cache) = lstm_forward(
        current_parallelism(),
        x.data(),
        weights(w_ih, w_hh, b_ih, b_hh),
        dims,
    );
    Tensor::from_op(
        [dims.0, dims.1, dims.3],
        out,
        &[x, w_ih, w_hh, b_ih, b_hh],
        RecurrentBackward {
            cache: Cache::Lstm(Arc::new(cache)),
        },
    )
}

/// One GRU layer as `torch.nn.GRU(batch_first=True)` with a zero initial
/// state: `x` (batch, time, input), `w_ih` (3H, input), `w_hh` (3H, H),
/// `b_ih`, `b_hh` (3H), gate order r, z, n with
/// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`. Returns the hidden
/// states (batch, time, H).
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn gru_layer(x: &Tensor, w_ih: &Tensor, w_hh: &Tensor, b_ih: &Tensor, b_hh: &Tensor) -> Tensor {
    let dims = layer_dims(Cell::Gru, x, w_ih, w_hh, b_ih, b_hh);
    let (out, cache) = gru_forward(
        current_parallelism(),
        x.data(),
        weights(w_ih, w_hh, b_ih, b_hh),
        dims,
    );
    Tensor::from_op(
        [dims.0, dims.1, dims.3],
        out,
        &[x, w_ih, w_hh, b_ih, b_hh],
        RecurrentBackward {
            cache: Cache::Gru(Arc::new(cache)),
        },
    )
}

enum Cache {
    Lstm(Arc<LstmCache>),
    Gru(Arc<GruCache>),
}

struct RecurrentBackward {
    cache: Cache,
}

impl Backward for RecurrentBackward {
    fn name(&self) -> &'static str {
        match self.cache {
            Cache::Lstm(_) => Cell::Lstm.name(),
            Cache::Gru(_) => Cell::Gru.name(),
        }
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let [x, w_ih, w_hh, b_ih, b_hh] = inputs else {
            unreachable!("recurrent layers have five inputs")
        };
        let hidden = w_hh.dim(1);
        let dims = (x.dim(0), x.dim(1), x.dim(2), hidden);
        let par = current_parallelism();
        let w = weights(w_ih, w_hh, b_ih, b_hh);
        let g = match &self.cache {
            Cache::Lstm(cache) => lstm_backward(par, grad.data(), cache, w, dims),
            Cache::Gru(cache) => {
                gru_backward(par, grad.data(), x.data(), output.data(), cache, w, dims)
            }
        };
        vec![
            x.requires_grad().then(|| Tensor::from_vec(x.shape(), g.x)),
            Some(Tensor::from_vec(w_ih.shape(), g.w_ih)),
            Some(Tensor::from_vec(w_hh.shape(), g.w_hh)),
            Some(Tensor::from_vec(b_ih.shape(), g.b_ih)),
            Some(Tensor::from_vec(b_hh.shape(), g.b_hh)),
        ]
    }
}
