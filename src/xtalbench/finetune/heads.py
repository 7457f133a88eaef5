"""An ensemble of small MLP readout heads on frozen backbone features (scikit-learn style).

Each member differs in its seed (weight initialisation and minibatch order) and is
early-stopped on a held-out set: training stops after `patience` epochs without a lower
validation MAE and the best epoch's weights are kept. Targets are standardised per fit.
"""

from __future__ import annotations

import numpy as np


class HeadEnsemble:
    def __init__(self, members: int = 2, hidden: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 300, patience: int = 30, batch_size: int = 64, seed: int = 0):
        self.members, self.hidden, self.lr, self.weight_decay = members, hidden, lr, weight_decay
        self.max_epochs, self.patience, self.batch_size, self.seed = max_epochs, patience, batch_size, seed

    def _member(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int):
        import torch

        torch.manual_seed(seed)
        gen = np.random.default_rng(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], self.hidden), torch.nn.SiLU(), torch.nn.Linear(self.hidden, 1))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt, yt = torch.as_tensor(x), torch.as_tensor(y)
        xv = torch.as_tensor(x_val)
        best, best_state, since, epochs = np.inf, None, 0, 0
        for epochs in range(1, self.max_epochs + 1):
            net.train()
            order = gen.permutation(len(x))
            for start in range(0, len(x), self.batch_size):
                idx = torch.as_tensor(order[start : start + self.batch_size])
                opt.zero_grad()
                loss = torch.nn.functional.l1_loss(net(xt[idx]).squeeze(1), yt[idx])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = float(np.mean(np.abs(net(xv).squeeze(1).numpy() - y_val)))
            if val < best - 1e-9:
                best, since = val, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                since += 1
                if since >= self.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        return net, epochs, best

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> HeadEnsemble:
        x, x_val = np.asarray(x, np.float32), np.asarray(x_val, np.float32)
        self.x_mean_, self.x_std_ = x.mean(0), x.std(0) + 1e-6
        self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y) + 1e-9)
        xs, xvs = (x - self.x_mean_) / self.x_std_, (x_val - self.x_mean_) / self.x_std_
        ys = ((np.asarray(y) - self.y_mean_) / self.y_std_).astype(np.float32)
        yvs = ((np.asarray(y_val) - self.y_mean_) / self.y_std_).astype(np.float32)
        fitted = [self._member(xs, ys, xvs, yvs, self.seed + k) for k in range(self.members)]
        self.nets_ = [f[0] for f in fitted]
        self.epochs_ = [f[1] for f in fitted]
        self.val_mae_ = [f[2] * self.y_std_ for f in fitted]
        return self

    def predict_members(self, x: np.ndarray) -> np.ndarray:
        """(members, n) predictions in target units."""
        import torch

        xs = torch.as_tensor(((np.asarray(x, np.float32) - self.x_mean_) / self.x_std_).astype(np.float32))
        with torch.no_grad():
            out = np.stack([net(xs).squeeze(1).numpy().astype(np.float64) for net in self.nets_])
        return out * self.y_std_ + self.y_mean_

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Member mean and spread (standard deviation across members)."""
        members = self.predict_members(x)
        return members.mean(0), members.std(0)
