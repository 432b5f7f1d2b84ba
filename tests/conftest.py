"""Fixtures shared by the compiler tests: a small CNN trained once per session on a 1-D task."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snn_test_nets import tone_data


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 9, stride=2)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 16, 5)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool1d(x, 1).flatten(1))


@pytest.fixture(scope="session")
def tone_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = tone_data(1024, seed=1)
    model = SmallCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(15):
        for k in range(0, 1024, 64):
            optimiser.zero_grad()
            F.cross_entropy(model(x[k : k + 64]), y[k : k + 64]).backward()
            optimiser.step()
    model.eval()
    x_test, y_test = tone_data(400, seed=2)
    assert (model(x_test).argmax(1) == y_test).float().mean() > 0.6, "the test CNN did not learn its task"
    return model, x[:256], x_test
