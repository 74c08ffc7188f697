"""A classifier over the mean of token embeddings, the pooling sentence-transformers models were trained with.

all-MiniLM-L6-v2 (BERT) and all-mpnet-base-v2 (MPNet) learnt their sentence space through mean
pooling; their first-token vector was never trained for meaning, so a head on mean-pooled tokens
starts from what the encoder knows. `mean_pool_class` gives the class for a config's `model_type`.

With `config.mention_pooling` (`model.pooling: mean_mention`) the head also reads the mean of the
tokens in `mention_mask`, the target's mentions in the text (as TD-BERT pools the target): a
sentence's mean says what it is about, not which of its names the stance is toward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel
from transformers.models.mpnet.modeling_mpnet import MPNetModel, MPNetPreTrainedModel

from pipeline.core.errors import PipelineError


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MeanPoolHead(nn.Module):
    """The pooled head every encoder family shares: `encode` gives the last hidden states."""

    num_labels: int
    mention_pooling: bool
    dropout: nn.Dropout
    classifier: nn.Linear

    def add_head(self, config: Any) -> None:
        self.num_labels = config.num_labels
        self.mention_pooling = bool(getattr(config, "mention_pooling", False))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size * (2 if self.mention_pooling else 1), config.num_labels)

    def encode(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        pooled = masked_mean(hidden, attention_mask)
        if self.mention_pooling:
            if mention_mask is None:
                raise ValueError("this model pools the target's mentions: give mention_mask")
            pooled = torch.cat([pooled, masked_mean(hidden, mention_mask)], dim=-1)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MeanPoolBertClassifier(MeanPoolHead, BertPreTrainedModel):
    def __init__(self, config: Any) -> None:
        BertPreTrainedModel.__init__(self, config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.add_head(config)
        self.post_init()

    def encode(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


class MeanPoolMPNetClassifier(MeanPoolHead, MPNetPreTrainedModel):
    def __init__(self, config: Any) -> None:
        MPNetPreTrainedModel.__init__(self, config)
        self.mpnet = MPNetModel(config, add_pooling_layer=False)
        self.add_head(config)
        self.post_init()

    def encode(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return self.mpnet(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # no segment ids


MEAN_POOL_CLASSES: dict[str, type] = {"bert": MeanPoolBertClassifier, "mpnet": MeanPoolMPNetClassifier}


def mean_pool_class(model_type: str) -> type:
    if model_type not in MEAN_POOL_CLASSES:
        known = ", ".join(MEAN_POOL_CLASSES)
        raise PipelineError(f"mean pooling has no {model_type!r} encoder (it has {known}); use model.pooling: cls")
    return MEAN_POOL_CLASSES[model_type]
