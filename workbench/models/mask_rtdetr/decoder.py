"""MaskRTDETR transformer: input projection, anchors, IoU-aware (top-k) query selection, shared
class/box/mask heads behind ``dec_norm``, mask-enhanced anchors, deformable-attention decoder."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .box_ops import inverse_sigmoid, masks_to_boxes_cxcywh
from .denoising import get_denoising_training_group
from .layers import MLP, BatchNorm2d


def deformable_attention_core(value, spatial_shapes, sampling_locations, attention_weights):
    """Pure-PyTorch multi-scale deformable attention (``grid_sample``, align_corners=False).

    value [B, S, M, Dh]; sampling_locations [B, Q, M, L, P, 2] in [0, 1];
    attention_weights [B, Q, M, L, P]. Returns [B, Q, M*Dh].
    """
    b, _, m, d = value.shape
    _, q, _, n_levels, n_points, _ = sampling_locations.shape
    splits = [h * w for h, w in spatial_shapes]
    values = value.split(splits, dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [B*M, Q, P, 2]
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    attn = attention_weights.transpose(1, 2).reshape(b * m, 1, q, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * attn).sum(-1).reshape(b, m * d, q)
    return out.transpose(1, 2)


class MSDeformableAttention(nn.Module):
    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.head_dim = embed_dim // num_heads
        n = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dim, n * 2)
        self.attention_weights = nn.Linear(embed_dim, n)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).reshape(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query, reference_points, value, spatial_shapes, value_mask=None):
        """query [B, Q, C]; reference_points [B, Q, 1, 4] (cxcywh in [0, 1]); value [B, S, C]."""
        b, q = query.shape[:2]
        v = self.value_proj(value)
        if value_mask is not None:
            v = v * value_mask.to(v.dtype).unsqueeze(-1)
        v = v.reshape(b, -1, self.num_heads, self.head_dim)
        off = self.sampling_offsets(query).reshape(b, q, self.num_heads, self.num_levels, self.num_points, 2)
        aw = self.attention_weights(query).reshape(b, q, self.num_heads, self.num_levels * self.num_points)
        aw = aw.softmax(-1).reshape(b, q, self.num_heads, self.num_levels, self.num_points)
        ref = reference_points[:, :, None, :, None, :]
        loc = ref[..., :2] + off / self.num_points * ref[..., 2:] * 0.5
        out = deformable_attention_core(v, spatial_shapes, loc, aw)
        return self.output_proj(out)


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int = 256, n_head: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0,
                 n_levels: int = 3, n_points: int = 4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, n_head, n_levels, n_points)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, ref_points, memory, spatial_shapes, attn_mask=None, memory_mask=None, query_pos=None):
        q = k = tgt if query_pos is None else tgt + query_pos
        blocked = None if attn_mask is None else ~attn_mask  # attn_mask: True = may attend
        t2 = self.self_attn(q, k, tgt, attn_mask=blocked, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(t2))
        t2 = self.cross_attn(tgt if query_pos is None else tgt + query_pos, ref_points, memory, spatial_shapes,
                             memory_mask)
        tgt = self.norm2(tgt + self.dropout(t2))
        t2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(t2))


class MaskTransformerDecoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(TransformerDecoderLayer(**layer_kwargs) for _ in range(num_layers))


class MaskRTDETRTransformer(nn.Module):
    """Everything between the encoder and the loss. Attribute names mirror Paddle's ``MaskRTDETR``."""

    def __init__(self, num_classes: int = 80, hidden_dim: int = 256, num_queries: int = 300,
                 backbone_feat_channels=(256, 256, 256), feat_strides=(8, 16, 32), num_prototypes: int = 32,
                 num_levels: int = 3, num_decoder_points: int = 4, nhead: int = 8, num_decoder_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.0, num_denoising: int = 100,
                 label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0, mask_enhanced: bool = True,
                 eps: float = 1e-2):
        super().__init__()
        if len(backbone_feat_channels) != num_levels:
            raise ValueError("this port expects one encoder map per decoder level")
        self.num_classes, self.hidden_dim, self.num_queries = num_classes, hidden_dim, num_queries
        self.feat_strides = list(feat_strides)
        self.num_levels, self.eps, self.mask_enhanced = num_levels, eps, mask_enhanced
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = num_denoising, label_noise_ratio, box_noise_scale

        self.input_proj = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, hidden_dim, 1, bias=False), norm=BatchNorm2d(hidden_dim)))
            for c in backbone_feat_channels)
        self.decoder = MaskTransformerDecoder(num_decoder_layers, d_model=hidden_dim, n_head=nhead,
                                              dim_feedforward=dim_feedforward, dropout=dropout,
                                              n_levels=num_levels, n_points=num_decoder_points)
        self.denoising_class_embed = nn.Embedding(num_classes, hidden_dim)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.mask_query_head = MLP(hidden_dim, hidden_dim, num_prototypes, 3)
        self.enc_output = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        self.dec_norm = nn.LayerNorm(hidden_dim)
        self.score_head = nn.Linear(hidden_dim, num_classes)
        self.bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.constant_(self.score_head.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(self.bbox_head.layers[-1].weight)
        nn.init.zeros_(self.bbox_head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[1].weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj.conv.weight)

    # ----------------------------------------------------------------- pieces
    def _encoder_input(self, feats):
        proj = [self.input_proj[i](f) for i, f in enumerate(feats)]
        shapes = [(int(p.shape[2]), int(p.shape[3])) for p in proj]
        # permute+reshape instead of flatten(2).transpose(1, 2): the latter makes PyTorch's CPU
        # BatchNorm backward wrong at batch size 1 (docs/mask_rtdetr.md, "Batch-1 gradients").
        memory = torch.cat([p.permute(0, 2, 3, 1).reshape(p.shape[0], -1, p.shape[1]) for p in proj], 1)
        return memory, shapes

    def generate_anchors(self, spatial_shapes, device, dtype=torch.float32, grid_size: float = 0.05):
        """Logit-space anchors [1, S, 4] and validity mask [1, S, 1].

        As in Paddle, the centre's x is divided by the map height and y by its width.
        """
        anchors = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            gy, gx = torch.meshgrid(torch.arange(h, dtype=dtype, device=device),
                                    torch.arange(w, dtype=dtype, device=device), indexing="ij")
            xy = (torch.stack([gx, gy], -1) + 0.5) / torch.tensor([h, w], dtype=dtype, device=device)
            wh = torch.ones_like(xy) * grid_size * (2.0 ** lvl)
            anchors.append(torch.cat([xy, wh], -1).reshape(1, h * w, 4))
        anchors = torch.cat(anchors, 1)
        valid = ((anchors > self.eps) & (anchors < 1 - self.eps)).all(-1, keepdim=True)
        anchors = torch.log(anchors / (1 - anchors))
        anchors = torch.where(valid, anchors, torch.full_like(anchors, float("inf")))
        return anchors, valid

    def _class_and_mask(self, query, mask_feat):
        q = self.dec_norm(query)
        logits = self.score_head(q)
        mq = self.mask_query_head(q)
        b, p, h, w = mask_feat.shape
        masks = torch.bmm(mq, mask_feat.flatten(2)).reshape(b, -1, h, w)
        return logits, masks

    def _decoder_input(self, memory, mask_feat, spatial_shapes, dn_class=None, dn_bbox_unact=None):
        if memory.shape[1] < self.num_queries:
            stride8 = spatial_shapes[0]
            raise ValueError(
                f"the input ({stride8[0] * 8}x{stride8[1] * 8} px) gives {memory.shape[1]} encoder tokens, fewer "
                f"than the {self.num_queries} queries the decoder selects: use a larger input_size "
                "or fewer num_queries"
            )
        anchors, valid = self.generate_anchors(spatial_shapes, memory.device, memory.dtype)
        memory = torch.where(valid, memory, torch.zeros_like(memory))
        out_memory = self.enc_output(memory)
        enc_logits = self.score_head(out_memory)
        enc_boxes_unact = self.bbox_head(out_memory) + anchors
        topk = torch.topk(enc_logits.max(-1).values, self.num_queries, dim=1).indices
        target = torch.gather(out_memory, 1, topk.unsqueeze(-1).expand(-1, -1, out_memory.shape[-1]))
        ref_unact = torch.gather(enc_boxes_unact, 1, topk.unsqueeze(-1).expand(-1, -1, 4))
        enc_logits_q, enc_masks = self._class_and_mask(target, mask_feat)
        enc_out = {"pred_logits": enc_logits_q, "pred_boxes": torch.sigmoid(ref_unact), "pred_masks": enc_masks}

        target = target.detach()
        if dn_class is not None:
            target = torch.cat([dn_class, target], 1)
        if self.mask_enhanced:
            ref_unact = inverse_sigmoid(masks_to_boxes_cxcywh(enc_masks > 0))
        if dn_bbox_unact is not None:
            ref_unact = torch.cat([dn_bbox_unact, ref_unact], 1)
        init_out = None
        if self.training and dn_class is not None:
            lg, mk = self._class_and_mask(target, mask_feat)
            init_out = {"pred_logits": lg, "pred_boxes": torch.sigmoid(ref_unact), "pred_masks": mk}
        return target, ref_unact.detach(), enc_out, init_out

    def _run_decoder(self, target, ref_unact, memory, spatial_shapes, mask_feat, attn_mask):
        """Training: per-layer (logits, boxes, masks) lists. Eval: the last layer only."""
        output = target
        ref_detach = torch.sigmoid(ref_unact)
        ref_prev = None
        logits_l, boxes_l, masks_l = [], [], []
        n = len(self.decoder.layers)
        for i, layer in enumerate(self.decoder.layers):
            pos = self.query_pos_head(ref_detach)
            output = layer(output, ref_detach.unsqueeze(2), memory, spatial_shapes, attn_mask, None, pos)
            delta = self.bbox_head(output)
            inter = torch.sigmoid(delta + inverse_sigmoid(ref_detach))
            if self.training:
                lg, mk = self._class_and_mask(output, mask_feat)
                logits_l.append(lg)
                masks_l.append(mk)
                boxes_l.append(inter if i == 0 else torch.sigmoid(delta + inverse_sigmoid(ref_prev)))
            elif i == n - 1:
                lg, mk = self._class_and_mask(output, mask_feat)
                return [lg], [inter], [mk]
            ref_prev = inter
            ref_detach = inter.detach() if self.training else inter
        return logits_l, boxes_l, masks_l

    # ----------------------------------------------------------------- forward
    def forward(self, feats, mask_feat, targets=None, dn_generator: torch.Generator | None = None):
        memory, shapes = self._encoder_input(feats)
        dn_class = dn_bbox = attn_mask = dn_meta = None
        if self.training and targets is not None:
            dn_class, dn_bbox, attn_mask, dn_meta = get_denoising_training_group(
                targets, self.num_classes, self.num_queries, self.denoising_class_embed.weight,
                self.num_denoising, self.label_noise_ratio, self.box_noise_scale, generator=dn_generator)
        target, ref_unact, enc_out, init_out = self._decoder_input(memory, mask_feat, shapes, dn_class, dn_bbox)
        logits, boxes, masks = self._run_decoder(target, ref_unact, memory, shapes, mask_feat, attn_mask)
        if not self.training:
            return {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "pred_masks": masks[-1]}

        layers = [{"pred_logits": lg, "pred_boxes": bx, "pred_masks": mk} for lg, bx, mk in zip(logits, boxes, masks)]
        dn_layers = None
        if dn_meta is not None:
            n_dn = dn_meta["dn_num_split"][0]
            all_layers = ([init_out] if init_out is not None else []) + layers
            dn_layers = [{k: v[:, :n_dn] for k, v in d.items()} for d in all_layers]
            match_layers = [{k: v[:, n_dn:] for k, v in d.items()} for d in all_layers]
        else:
            match_layers = layers
        # loss order as in Paddle: [enc, (init), dec_1 .. dec_L]; the last entry is the "main" one
        out = dict(match_layers[-1])
        out["aux_outputs"] = [enc_out] + match_layers[:-1]
        out["dn_outputs"] = dn_layers
        out["dn_meta"] = dn_meta
        return out
