"""The modeldeploy operator: reconciles ModelDeployments into Deployments, Services and HPAs."""
