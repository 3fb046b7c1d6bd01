"""Beam's DaskRunner (2.77) with three translation bugs fixed, so our unchanged pipelines run on Dask.

Select it with pipeline options only (the transforms stay runner-agnostic):

    --runner beam_jobs.dask_runner.DaskRunner --dask_client_address HOST:PORT

What Beam 2.77's ``apache_beam.runners.dask`` gets wrong for these jobs (read from its source,
``dask_runner.py`` / ``transform_evaluator.py``, and seen when the embed job ran on it):

1. **Multi-output ParDos.** One Dask bag per applied transform holds *all* outputs of a ParDo
   (main and every ``TaggedOutput``) mixed, and every consumer of any of its outputs reads that
   whole bag. ``ValidateItemBlocks(...).with_outputs(DEAD_LETTER, main="valid")`` then feeds item
   batches to the dead-letter writer (``TypeError: Object of type ItemBatch is not JSON
   serializable``) and dead letters to the model. Here a ParDo's bag holds ``(tag, value)`` pairs
   and each consumer reads only its own tag.
2. **Only the last transform is computed.** Beam computes the bag of the last transform visited;
   any branch that does not feed it (a second sink) silently never runs. Here every sink (a
   transform whose outputs nobody consumes) is computed.
3. Outputs emitted in ``finish_bundle`` are collected *before* ``finish_bundle`` runs (lost), and the
   output receivers are built once on the client and shipped inside the task graph. Here each bundle
   builds its own receivers and collects after ``finish_bundle``.

Everything else (Create, Reshuffle as a no-op, GroupByKey, Flatten, side inputs, the
``--dask_*`` options) is Beam's own code, used as is.
"""
from __future__ import annotations

import collections
import dataclasses
from functools import partial

from beam_jobs.beam_env import beam  # noqa: F401  (quiet Beam import first)
from apache_beam import DoFn, pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask.transform_evaluator import (TRANSLATIONS, DaskBagOp, DaskBagWindowedIterator, Flatten,
                                                          NoOp, get_windowed_value)
from apache_beam.transforms.sideinputs import SideInputMap


class _Collect(Receiver):
    def __init__(self, tag, out: list):
        self.tag, self.out = tag, out

    def receive(self, windowed_value):
        self.out.append((self.tag, windowed_value.value))


class _Receivers(dict):
    """tag -> a receiver appending ``(tag, value)`` to one list (main output: tag None)."""

    def __init__(self, out: list):
        super().__init__()
        self.out = out

    def __missing__(self, tag):
        receiver = self[tag] = _Collect(tag, self.out)
        return receiver


def run_bundle(items, fn, window_fn, label, side_inputs, args, kwargs) -> list:
    """One Dask partition = one Beam bundle of ``fn``; returns ``(tag, value)`` for every output."""
    out: list = []
    receivers = _Receivers(out)
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(label, state=None), side_inputs=side_inputs,
        input_args=args, input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return out


class TaggedParDo(DaskBagOp):
    """A ParDo whose bag holds ``(tag, value)`` pairs (see ``outputs_of``)."""

    def apply(self, input_bag, side_inputs=None):
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        return input_bag.map(get_windowed_value, window_fn).map_partitions(
            run_bundle, transform.fn, window_fn, transform.label, side_inputs, list(args), kwargs)


def _pick(pair, tag):
    return pair[0] == tag


def _value(pair):
    return pair[1]


def outputs_of(bag, producer_op: DaskBagOp, tag):
    """The bag of one output PCollection: a TaggedParDo's pairs filtered to ``tag``; others as they are."""
    if isinstance(producer_op, TaggedParDo):
        return bag.filter(partial(_pick, tag=tag)).map(_value)
    return bag


class DaskRunner(beam_dask.DaskRunner):
    """``apache_beam.runners.dask.dask_runner.DaskRunner`` with the fixes in the module docstring."""

    @staticmethod
    def to_dask_bag_visitor(bag_kwargs=None) -> PipelineVisitor:
        bag_kwargs = bag_kwargs or {}

        @dataclasses.dataclass
        class Visitor(PipelineVisitor):
            bags: dict = dataclasses.field(default_factory=collections.OrderedDict)
            ops: dict = dataclasses.field(default_factory=dict)
            consumed: set = dataclasses.field(default_factory=set)

            def bag_of(self, pcoll):
                producer = pcoll.producer
                self.consumed.add(producer)
                return outputs_of(self.bags[producer], self.ops[producer], pcoll.tag)

            def visit_transform(self, node: AppliedPTransform) -> None:
                cls = node.transform.__class__
                op_class = TaggedParDo if cls is beam.ParDo else TRANSLATIONS.get(cls, NoOp)
                op = op_class(node, bag_kwargs=bag_kwargs)
                kws = {"input_bag": None, "side_inputs": None}
                inputs = list(node.inputs)
                if inputs:
                    bags = [None if isinstance(v, pvalue.PBegin) else self.bag_of(v) for v in inputs
                            if isinstance(v, pvalue.PBegin) or v.producer in self.bags]
                    kws["input_bag"] = bags[0] if len(bags) == 1 and not isinstance(op, Flatten) else bags
                if node.side_inputs:
                    kws["side_inputs"] = [
                        SideInputMap(type(si), si._view_options(),
                                     DaskBagWindowedIterator(self.bag_of(si.pvalue), si._window_mapping_fn))
                        for si in node.side_inputs]
                self.bags[node] = op.apply(**kws)
                self.ops[node] = op

            def sinks(self) -> list:
                return [bag for node, bag in self.bags.items() if node not in self.consumed and bag is not None]

        return Visitor()

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist
        from apache_beam.runners.dask.overrides import dask_overrides

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = self.to_dask_bag_visitor(bag_kwargs)
        pipeline.visit(visitor)
        futures = client.compute(list(dask.optimize(*visitor.sinks())))
        return DaskRunnerResult(client, futures)


@dataclasses.dataclass
class DaskRunnerResult(beam_dask.DaskRunnerResult):
    """Beam's result, closing the client once the pipeline finished (Beam's leaves it open)."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()


__all__ = ["DaskRunner"]
