"""Distillation: a smaller student built from the teacher and trained to match it on unlabelled inputs.

    spec = parse_distill_spec("layers=1/2,ffn=0.5,steps=200")
    build_student(teacher_dir, student_dir, spec)          # optional: distill builds it when missing
    report = distill(teacher_dir, student_dir, default_inputs("whisper"), spec, checkpoint_dir=ckpt)

Supported: Whisper (decoder layers; encoder frozen), causal LMs (GPT-2, Llama, Qwen2, Mistral, Gemma, SmolLM3;
Phi-3 layers only) and CLIP (both towers). The student folder is a Hugging Face model that ``mmedge export`` takes.
"""

from mmedge.quantize.distill.inputs import default_inputs, load_inputs
from mmedge.quantize.distill.spec import DistillSpec, parse_distill_spec
from mmedge.quantize.distill.student import StudentReport, build_student
from mmedge.quantize.distill.train import DistillReport, distill

__all__ = ["DistillReport", "DistillSpec", "StudentReport", "build_student", "default_inputs", "distill",
           "load_inputs", "parse_distill_spec"]
