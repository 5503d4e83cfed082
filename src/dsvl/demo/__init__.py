"""The demo's own machinery: pretrained tiny parts (`parts`), the stage-2 ablation (`ablation`), reading runs (`runs`)."""
