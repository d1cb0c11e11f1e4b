"""The tiny iris-like model `hack/real-node.sh smoke` serves, trained with the project's own venv
(scikit-learn comes from pyproject): a real artifact of the format the server loads.

usage: .venv/bin/python hack/node/smoke_model.py OUT.joblib
"""

import sys

import joblib
from sklearn.linear_model import LogisticRegression

X = [
    [5.1, 3.5, 1.4, 0.2],
    [4.9, 3.0, 1.4, 0.2],
    [6.7, 3.1, 4.4, 1.4],
    [6.3, 2.5, 4.9, 1.5],
    [6.3, 3.3, 6.0, 2.5],
    [7.1, 3.0, 5.9, 2.1],
]
y = [0, 0, 1, 1, 2, 2]
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), sys.argv[1])
