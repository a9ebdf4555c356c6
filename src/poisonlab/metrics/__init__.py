"""Metrics the field uses: attack success (ASR, MASR, clean accuracy) and detection quality.

Metrics take predictions and detector results, never a model. Each family has its module (this
package re-exports nothing, so importing one never pulls in the others' dependencies):

- :mod:`poisonlab.metrics.detection`: ``evaluate_detection(result, is_poison)`` (ACC, TPR, TNR,
  precision, F1, AUROC, AUPR, TPR at a fixed FPR, the ROC and PR curves), and ``auroc``,
  ``average_precision``, ``roc_points``, ``pr_points`` on a ground-truth mask and scores;
- :mod:`poisonlab.metrics.attack`: ``clean_accuracy``, ``attack_success_rate``,
  ``mean_attack_success_rate`` on predicted labels (``poisonlab.train.predict``);
- :mod:`poisonlab.metrics.collision`: feature-collision ``success_rate`` with Wilson or
  Clopper–Pearson intervals;
- :mod:`poisonlab.metrics.uncertainty`: ``backdoor_accuracy``, DNN and BNN accuracy on clean and
  triggered data (Subedar et al. 2019, Table 1).
"""
