{#
    The partition window [var('min_date'), var('max_date')) that Dagster passes for a run.
    Either bound may be unset (null): an unset bound does not restrict, so a run with no vars covers all dates.
#}

{% macro partition_window_bound(name) %}
    {%- set value = var(name, none) -%}
    {%- if value is none or value == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {#- Parsing rejects anything that is not an ISO date before it reaches SQL. -#}
    {{ return(modules.datetime.date.fromisoformat(value | string).isoformat()) }}
{% endmacro %}


{% macro partition_window_filter(column) %}
    {%- set min_date = partition_window_bound('min_date') -%}
    {%- set max_date = partition_window_bound('max_date') -%}
    {%- if min_date is not none and max_date is not none and min_date >= max_date -%}
        {{ exceptions.raise_compiler_error("empty partition window: min_date " ~ min_date ~ " >= max_date " ~ max_date) }}
    {%- endif -%}
    {%- set conditions = [] -%}
    {%- if min_date is not none -%}
        {%- do conditions.append(column ~ " >= date '" ~ min_date ~ "'") -%}
    {%- endif -%}
    {%- if max_date is not none -%}
        {%- do conditions.append(column ~ " < date '" ~ max_date ~ "'") -%}
    {%- endif -%}
    {{ conditions | join(' and ') if conditions else 'true' }}
{% endmacro %}


{#
    Pre-hook of a partition-aware incremental model: deletes the window it is about to insert, in the same
    transaction, so re-running a window replaces it exactly (a day that lost all its rows ends up empty too).
#}
{% macro delete_partition_window(column) %}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ partition_window_filter(column) }}
    {%- endif -%}
{% endmacro %}
