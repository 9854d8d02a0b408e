"""One CloudWatch dashboard: what the servers do (throughput, latency, outcomes, send rates, the
model in service), what the NLB sees, and what the fleet costs (CPU, memory, capacity)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from bidfilter_cdk import metrics_collector as names
from bidfilter_cdk.capacity import ClusterCapacity
from bidfilter_cdk.config import DeploymentConfig
from bidfilter_cdk.load_balancer import ThriftLoadBalancer
from bidfilter_cdk.service import ServerService

PERIOD = Duration.minutes(1)
PERIOD_S = int(PERIOD.to_seconds())
WIDTH = 8  # three graphs per row (the grid is 24 wide)
HEIGHT = 6


class ServingDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        capacity: ClusterCapacity,
        service: ServerService,
        load_balancer: ThriftLoadBalancer,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        nlb = load_balancer.load_balancer.metrics
        targets = load_balancer.target_group.metrics
        ecs_service = service.service

        throughput = self._graph(
            "Calls per second, by method",
            [self._search(names.CALLS, ("method",), "Sum", per_second=True)],
        )
        latency = self._graph(
            "Mean call latency (ms), by method",
            [
                cloudwatch.MathExpression(
                    expression="1000 * "
                    + self._search_text(names.CALL_LATENCY, ("method",), "Average"),
                    label="",
                    period=PERIOD,
                )
            ],
        )
        outcomes = self._graph(
            "filter calls per second, by outcome (fail_open_* = sent to everyone)",
            [
                self._search(
                    names.CALLS,
                    ("method", "result"),
                    "Sum",
                    per_second=True,
                    extra='method="filter"',
                )
            ],
            stacked=True,
        )
        decisions = self._metric(names.PARTNER_DECISIONS, "Sum")
        sent = self._metric(names.PARTNER_SENT, "Sum")
        explored = self._metric(names.PARTNER_EXPLORED, "Sum")
        send_rate = self._graph(
            "Share of partner calls sent (all partners), and explored",
            [
                cloudwatch.MathExpression(
                    expression="sent / decisions",
                    using_metrics={"sent": sent, "decisions": decisions},
                    label="sent",
                    period=PERIOD,
                ),
                cloudwatch.MathExpression(
                    expression="explored / decisions",
                    using_metrics={"explored": explored, "decisions": decisions},
                    label="explored",
                    period=PERIOD,
                ),
            ],
        )
        partner_send_rate = self._graph(
            "Send rate by partner (since each server started)",
            [self._search(names.PARTNER_SEND_RATE, ("partner",), "Average")],
        )
        scrapes_per_period = PERIOD_S // names.SCRAPE_INTERVAL_S
        model = self._graph(
            "Servers per model version; reloads",
            [
                cloudwatch.MathExpression(
                    expression=(
                        f"{self._search_text(names.MODEL_INFO, ('version',), 'SampleCount')}"
                        f" / {scrapes_per_period}"
                    ),
                    label="",
                    period=PERIOD,
                )
            ],
            right=[self._search(names.MODEL_RELOADS, ("result",), "Sum")],
        )
        flows = self._graph(
            "NLB flows",
            [nlb.active_flow_count(period=PERIOD), nlb.new_flow_count(period=PERIOD)],
        )
        traffic = self._graph(
            "NLB processed bytes; resets",
            [nlb.processed_bytes(period=PERIOD)],
            right=[
                nlb.tcp_target_reset_count(period=PERIOD),
                nlb.tcp_elb_reset_count(period=PERIOD),
            ],
        )
        health = self._graph(
            "NLB targets: healthy and unhealthy",
            [
                targets.healthy_host_count(period=PERIOD, statistic="Minimum"),
                targets.un_healthy_host_count(period=PERIOD, statistic="Maximum"),
            ],
        )
        utilisation = self._graph(
            "Service CPU and memory (% of reservation)",
            [
                ecs_service.metric_cpu_utilization(period=PERIOD),
                ecs_service.metric_memory_utilization(period=PERIOD),
            ],
        )
        reservation = self._graph(
            "Capacity provider reservation (%)",
            [
                cloudwatch.Metric(
                    namespace="AWS/ECS/ManagedScaling",
                    metric_name="CapacityProviderReservation",
                    dimensions_map={
                        "ClusterName": capacity.cluster.cluster_name,
                        "CapacityProviderName": capacity.capacity_provider.capacity_provider_name,
                    },
                    statistic="Average",
                    period=PERIOD,
                )
            ],
        )
        server_load = self._graph(
            "Pending calls, open connections; worker restarts",
            [
                self._metric(names.PENDING_CALLS, "Maximum"),
                self._metric(names.CONNECTIONS_OPEN, "Sum"),
            ],
            right=[self._metric(names.WORKER_RESTARTS, "Sum")],
        )

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{config.name}-serving",
            default_interval=Duration.hours(3),
            widgets=[
                [throughput, latency, outcomes],
                [send_rate, partner_send_rate, model],
                [flows, traffic, health],
                [utilisation, reservation, server_load],
            ],
        )

    # --- metric helpers ---------------------------------------------------------------------------

    def _metric(self, metric_name: str, statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self._config.metrics_namespace,
            metric_name=metric_name,
            dimensions_map={names.DEPLOYMENT_DIMENSION: self._config.name},
            statistic=statistic,
            period=PERIOD,
        )

    def _search_text(
        self, metric_name: str, labels: tuple[str, ...], statistic: str, extra: str = ""
    ) -> str:
        """A SEARCH over one metric's label values: one line per partner, version, method..."""
        schema = ",".join((self._config.metrics_namespace, names.DEPLOYMENT_DIMENSION, *labels))
        terms = (
            f'MetricName="{metric_name}" '
            f'{names.DEPLOYMENT_DIMENSION}="{self._config.name}" {extra}'.strip()
        )
        return f"SEARCH('{{{schema}}} {terms}', '{statistic}', {PERIOD_S})"

    def _search(
        self,
        metric_name: str,
        labels: tuple[str, ...],
        statistic: str,
        *,
        per_second: bool = False,
        extra: str = "",
    ) -> cloudwatch.MathExpression:
        expression = self._search_text(metric_name, labels, statistic, extra)
        if per_second:
            # Counters arrive as deltas: their Sum over a period, divided by it, is a rate.
            expression = f"{expression} / {PERIOD_S}"
        return cloudwatch.MathExpression(expression=expression, label="", period=PERIOD)

    @staticmethod
    def _graph(
        title: str,
        left: list[cloudwatch.IMetric],
        *,
        right: list[cloudwatch.IMetric] | None = None,
        stacked: bool = False,
    ) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(
            title=title,
            left=left,
            right=right or [],
            stacked=stacked,
            width=WIDTH,
            height=HEIGHT,
        )
