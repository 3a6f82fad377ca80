"""encore_training: weekly retraining with the promotion gates, one task per training step of the
registry (encore.pipeline.steps):

corpus -> train_recommender -> train_music

``train-recommender`` trains on the newest gold snapshot and moves ``champion`` only when the
candidate beats it on the same held-out split; ``train-music`` likewise on validation NLL. The
nightly DAG picks up whichever version is ``champion`` at scoring time.
"""
from __future__ import annotations

from airflow.sdk import dag

from encore_dag_support import dag_settings, step_tasks


@dag(dag_id="encore_training", schedule="@weekly", doc_md=__doc__, **dag_settings())
def encore_training():
    step_tasks("training")


encore_training()
