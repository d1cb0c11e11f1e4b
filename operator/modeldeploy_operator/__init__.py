"""The modeldeploy operator: reconciles ModelDeployment objects into Deployments, Services and HPAs."""
